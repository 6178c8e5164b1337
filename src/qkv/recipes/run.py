"""Train a recipe end to end, and load a trained run back for the commands.

A run directory holds the trainer's checkpoints (``step_*/``, ``latest``, ``best``), ``recipe.json`` and
``metrics.jsonl``. Each checkpoint's ``config.json`` says which task and model family it holds, so
``load_run`` rebuilds the right model and tokenizer without the recipe.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.data import load_tokenizer
from qkv.data.tokenizer_pair import TokenizerPair, load_tokenizer_pair
from qkv.data.tokenizers import atomic_write_text
from qkv.evaluation import accuracy, corpus_bleu, exact_match
from qkv.models import registry
from qkv.models.config import DecoderConfig, EncoderConfig, RNNSeq2SeqConfig, Seq2SeqConfig
from qkv.recipes import classify, feedback, lm, translation
from qkv.recipes.config import DecodeConfig, Recipe, RecipeError
from qkv.training import TrainConfig, Trainer, TrainResult, load_weights, read_config
from qkv.training.checkpoint import WEIGHTS, CheckpointError, check_fits, read_meta, resolve
from qkv.training.rundir import RunDirError, prepare_run_dir, run_lock

__all__ = ["train", "load_run", "LoadedRun", "CONFIG_TYPES", "decode_config", "run_recipe"]

CONFIG_TYPES = {c.__name__: c for c in (Seq2SeqConfig, RNNSeq2SeqConfig, DecoderConfig, EncoderConfig)}
EXPECTED = {"translation": (Seq2SeqConfig, RNNSeq2SeqConfig), "lm": (DecoderConfig,), "classify": (EncoderConfig,)}


@dataclass
class LoadedRun:
    task: str
    model: nn.Module
    tokenizer: Any  # TokenizerPair for translation
    config: Any
    path: Path
    extra: dict[str, Any]


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def _model_config(recipe: Recipe, **sizes: int) -> Any:
    try:
        cfg = registry.config(recipe.model, **{**sizes, **recipe.model_options})
    except TypeError as e:
        raise RecipeError(f"model_options do not fit model {recipe.model!r}: {e}") from e
    except ValueError as e:
        raise RecipeError(str(e)) from e
    if not isinstance(cfg, EXPECTED[recipe.task]):
        raise RecipeError(f"model {recipe.model!r} ({type(cfg).__name__}) cannot do task {recipe.task!r}")
    return cfg


def _saved_config(task: str, cfg: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {"task": task, "family": type(cfg).__name__, "model": cfg.to_dict(), **extra}


def _translation_parts(recipe: Recipe) -> dict[str, Any]:
    data = translation.build_data(recipe)
    pair = data.tokenizers
    cfg = _model_config(recipe, src_vocab_size=pair.source.vocab_size, tgt_vocab_size=pair.target.vocab_size,
                        pad_id=pair.target.pad_id)
    valid = data.valid[: recipe.metric_sentences]

    def metric_fn(model: nn.Module) -> dict[str, float]:
        if not valid:
            return {}
        hyps = translation.translate_texts(model, pair, [s for s, _ in valid], recipe.decode)
        refs = [t for _, t in valid]
        return {"exact_match": exact_match(hyps, refs), "bleu": corpus_bleu(hyps, refs).score}

    eval_ds = None
    if data.valid:
        eval_ds = translation.ParallelDataset.from_pairs(data.valid, pair.source, pair.target)
    return dict(
        cfg=cfg, tokenizer=pair, train=translation.loader(recipe, data.train),
        eval=translation.loader(recipe, eval_ds, shuffle=False) if eval_ds else None,
        loss=translation.loss_fn(recipe.label_smoothing, pair.target.pad_id),
        eval_loss=translation.loss_fn(0.0, pair.target.pad_id),
        metric=metric_fn, data=data,
    )


def _lm_parts(recipe: Recipe) -> dict[str, Any]:
    data = lm.build_data(recipe)
    cfg = _model_config(recipe, vocab_size=data.tokenizer.vocab_size, max_len=recipe.data.block_size)
    return dict(cfg=cfg, tokenizer=data.tokenizer, train=lm.loader(recipe, data.train),
                eval=lm.loader(recipe, data.valid, shuffle=False),
                loss=functools.partial(lm.loss_fn, smoothing=recipe.label_smoothing), eval_loss=lm.loss_fn,
                metric=None, data=data)


def _classify_parts(recipe: Recipe) -> dict[str, Any]:
    data = classify.build_data(recipe)
    extra: dict[str, Any] = {"labels": data.label_names}
    if data.model is not None:
        cfg = data.model.config
        extra["tokenizer"] = {"kind": "pretrained", "max_length": data.tokenizer.max_length}
    else:
        cfg = _model_config(recipe, vocab_size=data.tokenizer.vocab_size, num_classes=len(data.label_names),
                            pad_id=data.tokenizer.pad_id)
    valid = classify.loader(recipe, data.valid, shuffle=False) if data.valid else None

    def metric_fn(model: nn.Module) -> dict[str, float]:
        if valid is None:
            return {}
        return {"accuracy": accuracy(*classify.predict_batches(model, valid))}

    return dict(cfg=cfg, tokenizer=data.tokenizer, train=classify.loader(recipe, data.train),
                eval=valid, loss=functools.partial(classify.loss_fn, smoothing=recipe.label_smoothing),
                eval_loss=classify.loss_fn, metric=metric_fn, data=data, extra=extra, model=data.model)


PARTS: dict[str, Callable[[Recipe], dict[str, Any]]] = {
    "translation": _translation_parts, "lm": _lm_parts, "classify": _classify_parts,
}


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
          echo: Callable[[str], Any] | None = print) -> tuple[TrainResult, dict[str, Any]]:
    """Build data, tokenizer and model for ``recipe`` and train; returns the result and the parts built.

    Args:
        recipe: the run.
        resume: continue the run in ``recipe.out_dir`` from its latest checkpoint (an error when it has none).
        overwrite: replace a previous run in ``recipe.out_dir`` (its checkpoints, metrics and pictures).
        echo: (when given) gets the lines of :func:`qkv.recipes.feedback.header` before training (task,
            model, data, device and the precision the run resolved to, budget, run directory), and "resuming
            from step N".

    Raises:
        RecipeError: ``out_dir`` holds another run and neither flag is given, is in use by another trainer, or
            (``resume``) holds a run this recipe does not fit; nothing in ``out_dir`` is changed then.
    """
    out = Path(recipe.out_dir)
    try:
        with run_lock(out):
            prepare_run_dir(out, resume=resume, overwrite=overwrite)
            return _train_locked(recipe, out, resume, echo)
    except RunDirError as e:
        raise RecipeError(str(e)) from e


def _train_config(recipe: Recipe, out: Path, cfg: Any) -> TrainConfig:
    tcfg = replace(recipe.train, out_dir=str(out))
    if recipe.time_limit is not None:  # the top-level field, kept for older recipes
        if tcfg.time_limit is not None and tcfg.time_limit != recipe.time_limit:
            raise RecipeError(f"time_limit ({recipe.time_limit}) and train.time_limit ({tcfg.time_limit}) differ; "
                              "set only train.time_limit")
        tcfg = replace(tcfg, time_limit=recipe.time_limit)
    if tcfg.schedule == "inverse_sqrt" and not tcfg.d_model:
        tcfg = replace(tcfg, d_model=getattr(cfg, "d_model", None) or cfg.hidden_size)
    return tcfg


def _check_resumable(out: Path, saved: dict[str, Any]) -> None:
    """The run in ``out`` must hold the same task and model as ``saved`` (what this recipe would build)."""
    try:
        have = read_config(out / "latest") or {}
    except (CheckpointError, ValueError) as e:
        raise RecipeError(f"cannot resume {out}: {e}") from e
    mine = {k: saved[k] for k in ("task", "family", "model")}
    theirs = {k: have.get(k) for k in mine}
    if mine != theirs:
        diff = [k for k in ("task", "family") if mine[k] != theirs[k]] or [
            f"model.{k}" for k in sorted(set(mine["model"]) | set(theirs["model"] or {}))
            if mine["model"].get(k) != (theirs["model"] or {}).get(k)]
        raise RecipeError(f"cannot resume {out}: it holds a {theirs['task']} run ({theirs['family']}) that this "
                          f"recipe ({mine['task']}, {mine['family']}) does not fit (differs in {', '.join(diff[:5])}); "
                          "nothing was changed")


def _train_locked(recipe: Recipe, out: Path, resume: bool,
                  echo: Callable[[str], Any] | None) -> tuple[TrainResult, dict[str, Any]]:
    parts = PARTS[recipe.task](recipe)
    saved = _saved_config(recipe.task, parts["cfg"], parts.get("extra", {}))
    if resume:
        _check_resumable(out, saved)
    tcfg = _train_config(recipe, out, parts["cfg"])
    torch.manual_seed(recipe.train.seed)
    model = parts.get("model")
    if model is None:
        model = registry.build_from_config(parts["cfg"])
    trainer = Trainer(
        model, parts["loss"], parts["train"], tcfg, eval_data=parts["eval"], eval_loss_fn=parts["eval_loss"],
        metric_fn=parts["metric"], model_config=saved, tokenizer=parts["tokenizer"],
    )
    if echo is not None:
        for line in feedback.header(recipe, parts, trainer):
            echo(line)
    if resume:
        try:
            trainer.resume(out / "latest")
        except CheckpointError as e:
            raise RecipeError(f"cannot resume {out}: {e}; nothing was changed") from e
        if echo is not None:
            echo(f"resuming from step {trainer.step:,} ({(out / 'latest').resolve()})")
    _write_json(out / "recipe.json", recipe.to_dict())  # only once the recipe is known to fit the run
    result = trainer.fit()
    parts["model"], parts["trainer"] = trainer.model, trainer
    return result, parts


def _checkpoint_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    for name in ("averaged", "best"):
        if (path / name / "checkpoint.json").is_file():
            return (path / name).resolve()
    try:
        return resolve(path)
    except CheckpointError as e:
        raise RecipeError(str(e)) from e


def _build_checked(saved: dict[str, Any], ckpt: Path, device: str) -> tuple[Any, nn.Module]:
    """The config and model of a run, its shapes checked against the weights file before any allocation."""
    try:
        cfg = CONFIG_TYPES[saved["family"]].from_dict(saved["model"])
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise RecipeError(f"{ckpt / 'config.json'}: the model config is not valid: {e}") from e
    try:
        with torch.device("meta"):
            skeleton = registry.build_from_config(cfg)
        check_fits(skeleton, ckpt / WEIGHTS)
        model = registry.build_from_config(cfg).to(device)
        load_weights(model, ckpt)
    except CheckpointError as e:
        raise RecipeError(str(e)) from e
    broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        raise RecipeError(f"{ckpt / WEIGHTS}: weights {broken[:3]} hold NaN or inf (did training diverge?)")
    return cfg, model.eval()


def _check_vocab(tok: Any, cfg: Any, ckpt: Path) -> None:
    pairs = (("source", "src_vocab_size"), ("target", "tgt_vocab_size")) if hasattr(tok, "source") else (
        (None, "vocab_size"),)
    for side, field in pairs:
        t = getattr(tok, side) if side else tok
        have = getattr(cfg, field, None)
        if have is not None and t.vocab_size > have:
            raise RecipeError(f"{ckpt}: the tokenizer has {t.vocab_size} ids but the model's {field} is {have}; "
                              "the tokenizer file does not belong to these weights")


def load_run(path: str | os.PathLike, *, task: str | None = None, device: str = "cpu") -> LoadedRun:
    """A trained model and its tokenizer(s) from a run or checkpoint directory (best, else latest).

    Raises:
        RecipeError: no qkv run there, a run of another ``task``, a checkpoint of a newer format, a config
            that does not fit the weights (checked before the model is allocated), weights holding NaN/inf,
            or a tokenizer larger than the model's vocabulary.
    """
    ckpt = _checkpoint_dir(path)
    try:
        read_meta(ckpt)
        saved = run_config(read_config(ckpt), ckpt)
    except CheckpointError as e:
        raise RecipeError(str(e)) from e
    if task is not None and saved["task"] != task:
        raise RecipeError(f"{path} holds a {saved['task']} model, not a {task} model")
    cfg, model = _build_checked(saved, ckpt, device)
    if saved["task"] == "translation":
        tok: Any = load_tokenizer_pair(ckpt)
        if not isinstance(tok, TokenizerPair):
            tok = TokenizerPair(tok, tok)
    elif saved.get("tokenizer", {}).get("kind") == "pretrained":  # a fine-tuned checkpoint keeps its own file
        from qkv.interop import PretrainedTokenizer

        tok = PretrainedTokenizer.from_file(ckpt / "tokenizer.json", pad_id=cfg.pad_id,
                                            max_length=saved["tokenizer"].get("max_length"))
    elif not any(ckpt.glob("tokenizer*")):
        raise RecipeError(f"{ckpt} holds no tokenizer; a run trained from Python needs Trainer(..., tokenizer=tok)")
    else:
        tok = load_tokenizer(ckpt)
    _check_vocab(tok, cfg, ckpt)
    extra = {k: v for k, v in saved.items() if k not in ("task", "family", "model")}
    return LoadedRun(saved["task"], model, tok, cfg, ckpt, extra)


TASK_OF = {"Seq2SeqConfig": "translation", "RNNSeq2SeqConfig": "translation", "DecoderConfig": "lm",
           "EncoderConfig": "classify"}


def run_config(saved: dict[str, Any] | None, ckpt: Path) -> dict[str, Any]:
    """A checkpoint's ``config.json`` as ``{"task", "family", "model", ...}``: as ``qkv train`` writes it, or
    a bare model config (what ``Trainer(model_config=cfg)`` writes from Python), whose family is the one
    config class that has all its fields and whose task follows from the family."""
    if saved and "task" in saved and saved.get("family") in CONFIG_TYPES:
        return saved
    fits = [name for name, cls in CONFIG_TYPES.items() if saved and set(saved) <= {f.name for f in
                                                                                   dataclasses.fields(cls)}]
    if len(fits) == 1:
        return {"task": TASK_OF[fits[0]], "family": fits[0], "model": saved}
    raise RecipeError(f"{ckpt} holds no qkv model config (config.json); train with qkv train, or from Python pass "
                      "Trainer(..., model_config=<the model's config, e.g. DecoderConfig>, tokenizer=<its tokenizer>)")


def run_recipe(run: LoadedRun) -> Recipe | None:
    """The recipe ``run`` was trained from (``recipe.json`` in its checkpoint's folder or the run directory),
    or ``None`` for a run trained without one (from Python)."""
    for folder in (run.path, run.path.parent):
        f = folder / "recipe.json"
        if f.is_file():
            try:
                return Recipe.from_dict(json.loads(f.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError, RecipeError) as e:
                raise RecipeError(f"{f}: not a valid recipe ({e})") from e
    return None


def decode_config(run: LoadedRun, *, beam: int | None = None, max_len: int | None = None) -> DecodeConfig:
    """How ``run`` decodes: its recipe's ``decode`` section (saved as ``recipe.json`` in the run directory),
    else the defaults; ``beam`` switches to beam search of that width, ``max_len`` caps output length."""
    recipe = run_recipe(run)
    dec = recipe.decode if recipe is not None else DecodeConfig()
    if beam:
        dec = replace(dec, strategy="beam", num_beams=beam)
    if max_len:
        dec = replace(dec, max_len=max_len)
    return dec
