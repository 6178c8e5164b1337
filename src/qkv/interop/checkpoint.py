"""Hugging Face checkpoint folders: read/write ``config.json`` and weights, and map tensors explicitly.

A family (BERT, GPT-2, BART, Marian) describes its tensors as a list of :class:`Link` s, one per qkv
state-dict entry. A link is invertible, so the same table converts both ways and also tells which
Hugging Face tensors (names and shapes) a qkv model of a given config expects: :func:`check_tensors`
compares those with a checkpoint and names every missing, unexpected or misshapen tensor.

Weights are read from ``model.safetensors`` (or a sharded ``model.safetensors.index.json``); a legacy
``pytorch_model.bin`` is read with ``torch.load(..., weights_only=True)``, never by unpickling
arbitrary objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from qkv.data.files import read_json_object

__all__ = [
    "Link",
    "link",
    "to_qkv",
    "to_hf",
    "check_tensors",
    "read_config",
    "read_weights",
    "stored_shapes",
    "shard_files",
    "write_weights",
    "strip_prefix",
    "drop_ignored",
]

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
LEGACY_BIN = "pytorch_model.bin"


class Link(NamedTuple):
    """One qkv tensor and the Hugging Face tensor(s) it is made of.

    Attributes:
        ours: qkv state-dict name.
        theirs: Hugging Face names; several are concatenated along dim 0 (BERT/BART query, key, value
            -> qkv's fused ``in_proj``) and split back in equal parts.
        transpose: the Hugging Face tensor is stored transposed (GPT-2's ``Conv1D`` ``(in, out)``).
    """

    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False


def link(ours: str, *theirs: str, transpose: bool = False) -> Link:
    """Shorthand: ``link("a.weight", "b.weight")``."""
    return Link(ours, tuple(theirs), transpose)


def to_qkv(links: Iterable[Link], theirs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face tensors -> qkv state dict (names checked beforehand by :func:`check_tensors`)."""
    out = {}
    for lk in links:
        parts = [theirs[n] for n in lk.theirs]
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # [W^Q; W^K; W^V]
        out[lk.ours] = t.t() if lk.transpose else t
    return out


def to_hf(links: Iterable[Link], ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """qkv state dict -> Hugging Face tensors (the inverse of :func:`to_qkv`)."""
    out = {}
    for lk in links:
        t = ours[lk.ours]
        t = t.t() if lk.transpose else t
        pieces = t.chunk(len(lk.theirs), dim=0) if len(lk.theirs) > 1 else (t,)
        for name, piece in zip(lk.theirs, pieces, strict=True):
            out[name] = piece
    return out


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t) if isinstance(t, tuple) else tuple(t.shape)  # a tensor, or a shape from a file header


def check_tensors(expected: Mapping[str, Any], found: Mapping[str, Any], *, source: str) -> None:
    """Raise ValueError naming every missing, unexpected and misshapen tensor (with both shapes).

    Args:
        expected: Hugging Face name -> tensor (or anything with ``.shape``) the qkv model needs.
        found: name -> tensor in the checkpoint (after prefixes and ignored tensors are removed).
        source: the checkpoint's path, for the message.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshapen = sorted(n for n in set(expected) & set(found) if _shape(expected[n]) != _shape(found[n]))
    if not (missing or unexpected or misshapen):
        return
    lines = [f"checkpoint {source} does not fit the model built from its config.json "
             f"({len(missing)} missing, {len(unexpected)} unexpected, {len(misshapen)} misshapen):"]
    lines += _capped([f"  missing tensor {n} (expected shape {_shape(expected[n])})" for n in missing])
    lines += _capped([f"  unexpected tensor {n} (shape {_shape(found[n])})" for n in unexpected])
    lines += _capped([f"  misshapen tensor {n}: checkpoint has {_shape(found[n])}, model expects "
                      f"{_shape(expected[n])}" for n in misshapen])
    raise ValueError("\n".join(lines))


def _capped(lines: list[str], limit: int = 20) -> list[str]:
    return lines if len(lines) <= limit else lines[:limit] + [f"  ... and {len(lines) - limit} more"]


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Drop the first of ``prefixes`` that some keys carry ("transformer.", "bert.", "model.").

    Keys without it (``final_logits_bias``, ``lm_head.weight``) are kept as they are.
    """
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k.removeprefix(prefix): v for k, v in state.items()}
    return dict(state)


def drop_ignored(state: Mapping[str, torch.Tensor], patterns: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove tensors qkv reads but does not use (regexes matched in full: pooler, buffers, heads)."""
    regexes = [re.compile(p) for p in patterns]
    return {k: v for k, v in state.items() if not any(r.fullmatch(k) for r in regexes)}


def read_config(folder: str | Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict; FileNotFoundError / ValueError say what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    path = folder / "config.json"
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise FileNotFoundError(
            f"{folder} has no config.json, so it is not a Hugging Face checkpoint folder (it holds {present})"
        )
    return read_json_object(path, "model config")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        size = path.stat().st_size
        raise ValueError(f"cannot read {path} ({size} bytes): {e}; the file is truncated or corrupt") from e


def shard_files(folder: str | Path) -> list[Path]:
    """The shards ``model.safetensors.index.json`` names, each checked to lie inside ``folder``.

    Raises:
        ValueError: no ``weight_map`` in the index, or a shard name pointing outside the folder.
    """
    folder = Path(folder)
    index_path = folder / SAFETENSORS_INDEX
    weight_map = read_json_object(index_path, "safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path} has no weight_map (tensor name -> shard file)")
    root = folder.resolve()
    shards = []
    for name in sorted(set(map(str, weight_map.values()))):
        shard = (folder / name).resolve()
        if Path(name).is_absolute() or root not in shard.parents:
            raise ValueError(f"{index_path}: shard {name!r} lies outside {folder}")
        shards.append(shard)
    return shards


def stored_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from the safetensors headers of a checkpoint folder (no data read); None for a ``.bin``."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        files = [folder / SAFETENSORS]
    elif (folder / SAFETENSORS_INDEX).is_file():
        files = shard_files(folder)
    else:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
        except (SafetensorError, OSError) as e:
            raise ValueError(f"cannot read {file}: {e}; the file is truncated or corrupt") from e
    return shapes


def read_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of a checkpoint folder and the file they came from.

    Looks for ``model.safetensors``, then a sharded ``model.safetensors.index.json``, then a legacy
    ``pytorch_model.bin`` (loaded with ``weights_only=True``: plain tensors only, no code runs).
    """
    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        return _read_safetensors(folder / SAFETENSORS), folder / SAFETENSORS
    if (folder / SAFETENSORS_INDEX).is_file():
        state: dict[str, torch.Tensor] = {}
        for shard in shard_files(folder):
            state.update(_read_safetensors(shard))
        return state, folder / SAFETENSORS_INDEX
    if (folder / LEGACY_BIN).is_file():
        path = folder / LEGACY_BIN
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a bad or unsafe file; its advice is not ours
            found = re.search(r"Unsupported global: [^\n]*?(?=\s*$|\. |\n)", str(e), re.MULTILINE)
            reason = found.group(0) if found else str(e).split("\n")[0].split(". ")[0][:200]
            raise ValueError(f"cannot read {path} as plain tensors ({reason}); qkv reads only tensors from .bin "
                             "files and never unpickles other objects: convert the file to safetensors") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path} must hold a dict of tensors, got {type(state).__name__}")
        odd = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
        if odd:
            raise ValueError(f"{path} holds entries that are not tensors: {odd[:10]}")
        return dict(state), path
    raise FileNotFoundError(f"{folder} has no weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {LEGACY_BIN}")


def write_weights(state: Mapping[str, torch.Tensor], folder: str | Path) -> Path:
    """Write ``folder/model.safetensors`` (contiguous copies: tied tensors are written once each)."""
    from safetensors.torch import save_file

    path = Path(folder) / SAFETENSORS
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path
