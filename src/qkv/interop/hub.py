"""``load_pretrained`` and ``save_pretrained``: Hugging Face checkpoint folders in and out of qkv.

A folder holds ``config.json`` (its ``model_type`` picks the family), ``model.safetensors`` (or a
legacy ``pytorch_model.bin``, read with ``weights_only=True``) and usually ``tokenizer.json``.
Every tensor is mapped explicitly (see each family's ``_links``): a tensor the model needs and the
checkpoint lacks, one the checkpoint has and no mapping uses, or one of the wrong shape raises a
ValueError naming it with both shapes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.interop import bart, bert, gpt2
from qkv.interop.checkpoint import (
    check_tensors,
    drop_ignored,
    read_config,
    read_weights,
    stored_shapes,
    strip_prefix,
    to_hf,
    to_qkv,
    write_weights,
)
from qkv.interop.family import Family
from qkv.interop.tokenizer import PretrainedTokenizer

__all__ = ["FAMILIES", "load_pretrained", "load_model", "from_transformers", "save_pretrained", "family_of"]

FAMILIES: dict[str, Family] = {f.model_type: f for f in (bert.BERT, gpt2.GPT2, bart.BART, bart.MARIAN)}


def _family(config: dict[str, Any], folder: Path) -> Family:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"{folder}: config model_type {model_type!r} cannot be loaded by qkv; "
            f"supported model types: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def _sentence_pooling(folder: Path) -> str | None:
    """"mean" or "cls" from a sentence-transformers ``1_Pooling/config.json``, if the folder has one."""
    path = folder / "1_Pooling" / "config.json"
    if not path.is_file():
        return None
    pooling = json.loads(path.read_text())
    return "cls" if pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens") else "mean"


def load_model(folder: str | Path, *, num_classes: int = 0) -> nn.Module:
    """The qkv model of a Hugging Face checkpoint folder, in eval mode (float32, CPU).

    Args:
        folder: the checkpoint folder.
        num_classes: encoders only: add a freshly initialised classification head of this size (for
            fine-tuning with ``EncoderModel.classify``); the checkpoint's own task heads are not read.

    Raises:
        FileNotFoundError: no folder, no ``config.json`` or no weights file.
        ValueError: unsupported ``model_type`` (the message lists the supported ones), an unsupported
            config option, an unreadable (e.g. truncated) weights file, or tensors that do not fit.
    """
    folder = Path(folder)
    config = read_config(folder)
    family = _family(config, folder)
    shapes = stored_shapes(folder)
    if shapes is not None:  # check the config against the weights' headers before allocating anything
        with torch.device("meta"):
            skeleton = family.build(config)
        check_tensors(*_expected_and_found(skeleton, family, shapes), source=str(folder))
    model = family.build(config)
    pooling = _sentence_pooling(folder)
    if pooling is not None and hasattr(model.config, "pooling"):
        model.config = dataclasses.replace(model.config, pooling=pooling)
    if num_classes:
        if not hasattr(model.config, "num_classes"):
            raise ValueError(f"num_classes={num_classes} needs an encoder checkpoint, got model_type "
                             f"{family.model_type!r}")
        model = type(model)(dataclasses.replace(model.config, num_classes=num_classes))
    state, source = read_weights(folder)
    load_hf_state(model, family, state, source=str(source))
    model.hf_config = config  # kept so save_pretrained writes the same special ids and extras back
    return model.eval()


def load_hf_state(model: nn.Module, family: Family, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Copy Hugging Face-named tensors into ``model`` after checking every name and shape.

    Args:
        model: a model built by ``family.build``.
        family: its family.
        state: checkpoint tensors (with or without the family's prefix).
        source: where they came from, for error messages.
    """
    expected, theirs = _expected_and_found(model, family, state)
    check_tensors(expected, theirs, source=source)
    result = model.load_state_dict(to_qkv(family.links(model), theirs), strict=False)
    fresh = [k for k in result.missing_keys if not k.startswith("head.")]  # a new classifier head stays as built
    if fresh or result.unexpected_keys:
        raise ValueError(f"tensor map of {family.model_type} is incomplete: qkv tensors {fresh} not mapped, "
                         f"{result.unexpected_keys} unknown to the model")


def _expected_and_found(model: nn.Module, family: Family, state: Mapping[str, Any]) -> tuple[dict, dict]:
    """What ``model`` needs, by Hugging Face name, and what the checkpoint (tensors or header shapes) offers."""
    theirs = drop_ignored(strip_prefix(state, family.prefixes), family.ignored)
    expected = to_hf(family.links(model), model.state_dict())
    for name in family.optional:
        if name not in theirs and name in expected:
            theirs[name] = expected[name]
    return expected, theirs


def from_transformers(hf_model: nn.Module) -> nn.Module:
    """The qkv model of an in-memory ``transformers`` model (its ``config`` and ``state_dict``), in eval mode.

    Same families, tensor maps and checks as :func:`load_model`; ``transformers`` itself is not imported.
    """
    config = hf_model.config.to_dict()
    family = _family(config, Path(type(hf_model).__name__))
    model = family.build(config)
    load_hf_state(model, family, hf_model.state_dict(), source=type(hf_model).__name__)
    model.hf_config = config
    return model.eval()


def _tokenizer(folder: Path, model: nn.Module) -> PretrainedTokenizer | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    pad = getattr(model.config, "pad_id", None)
    max_length = getattr(model.config, "max_len", None)
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        max_length = json.loads(st.read_text()).get("max_seq_length", max_length)
    return PretrainedTokenizer.from_file(path, pad_id=pad, max_length=max_length)


def load_pretrained(folder: str | Path, *, num_classes: int = 0) -> tuple[nn.Module, PretrainedTokenizer | None]:
    """Load a Hugging Face checkpoint folder as ``(qkv model, tokenizer)``.

    Supported ``model_type`` s: "bert" (BERT, MiniLM, sentence-transformers encoders) ->
    :class:`~qkv.models.EncoderModel`; "gpt2" -> :class:`~qkv.models.DecoderModel`; "bart" and
    "marian" -> :class:`~qkv.interop.bart.PretrainedSeq2Seq`. The tokenizer is a
    :class:`PretrainedTokenizer` over ``tokenizer.json`` (None when the folder has none); it truncates
    to sentence-transformers' ``max_seq_length`` when the folder says so, else to the model's ``max_len``.
    ``num_classes > 0`` adds a new classification head to an encoder (see :func:`load_model`).
    """
    folder = Path(folder)
    model = load_model(folder, num_classes=num_classes)
    return model, _tokenizer(folder, model)


def family_of(model: nn.Module, model_type: str | None = None) -> Family:
    """The family ``model`` saves as: ``model_type`` if given, else the one its class matches."""
    if model_type is not None:
        if model_type not in FAMILIES:
            raise ValueError(f"unknown model_type {model_type!r}; supported: {sorted(FAMILIES)}")
        return FAMILIES[model_type]
    for family in FAMILIES.values():
        if family.matches(model):
            return family
    raise ValueError(f"{type(model).__name__} has no Hugging Face family; savable: EncoderModel (bert), "
                     f"DecoderModel (gpt2), PretrainedSeq2Seq (bart, marian)")


def save_pretrained(
    model: nn.Module,
    folder: str | Path,
    *,
    tokenizer: PretrainedTokenizer | None = None,
    model_type: str | None = None,
) -> Path:
    """Write a folder that ``transformers`` loads: ``config.json`` + ``model.safetensors`` (+ tokenizer).

    Args:
        model: an ``EncoderModel`` (written as ``BertModel``), a ``DecoderModel`` (``GPT2LMHeadModel``)
            or a ``PretrainedSeq2Seq`` (``BartForConditionalGeneration`` / ``MarianMTModel``).
        folder: created if needed.
        tokenizer: also written as ``tokenizer.json``.
        model_type: force the family (default: from the model's class).

    Returns:
        The folder. A config Hugging Face cannot express (e.g. rotary positions as GPT-2) raises
        ValueError listing the offending fields.
    """
    family = family_of(model, model_type)
    hf = {**getattr(model, "hf_config", {}), **family.hf_config(model)}
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    hf |= {key: dtype for key in ("torch_dtype", "dtype") if key in hf or key == "torch_dtype"}  # what is written
    theirs = to_hf(family.links(model), model.state_dict())
    out = {(k if k in family.top_level else family.save_prefix + k): v for k, v in theirs.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    write_weights(out, folder)
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder
