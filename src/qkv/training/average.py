"""Checkpoint averaging (the paper averages the last 5 or 20 checkpoints) and pruning of old ones."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from qkv.training import checkpoint as ckpt

_STATE_FILES = {ckpt.WEIGHTS, ckpt.META, "optimizer.safetensors", "rng.safetensors"}


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete ``step_*`` checkpoints of a run directory, oldest first."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("step_*") if (p / ckpt.META).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[1]))


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` step checkpoints, sparing those ``latest``/``best`` point to.

    Returns:
        The deleted directories.
    """
    if keep_last <= 0:
        return []
    run_dir = Path(run_dir)
    pinned = {(run_dir / name).resolve() for name in ("latest", "best") if (run_dir / name).exists()}
    doomed = [p for p in list_checkpoints(run_dir)[:-keep_last] if p.resolve() not in pinned]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights of several checkpoints of one model.

    Floating-point tensors are averaged in float64 and cast back to their dtype; other tensors (integer
    buffers) are taken from the last checkpoint.

    Args:
        paths: checkpoint directories (or ``.safetensors`` weight files).

    Returns:
        The averaged weights, keyed as in ``model.safetensors``.

    Raises:
        ValueError: no paths, or checkpoints whose keys or shapes differ (named in the message).
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    files = [Path(p) if Path(p).suffix == ".safetensors" else ckpt.resolve(p) / ckpt.WEIGHTS for p in paths]
    total: dict[str, torch.Tensor] = {}
    first = ckpt.read_tensors(files[0])
    for key, t in first.items():
        total[key] = t.double() if t.is_floating_point() else t
    for file in files[1:]:
        state = ckpt.read_tensors(file)
        if state.keys() != total.keys():
            diff = sorted(set(state) ^ set(total))[:8]
            raise ValueError(f"{file} and {files[0]} hold different tensors (e.g. {diff})")
        for key, t in state.items():
            if t.shape != total[key].shape:
                raise ValueError(f"{key}: shape {tuple(t.shape)} in {file} vs {tuple(total[key].shape)}")
            total[key] = total[key] + t.double() if t.is_floating_point() else t
    return {k: (v / len(files)).to(first[k].dtype) if first[k].is_floating_point() else v for k, v in total.items()}


def write_averaged(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Average checkpoints and write a weights-only checkpoint at ``out`` (atomically).

    The config and tokenizer files of the last checkpoint are copied beside the averaged weights, so
    the result loads like any other checkpoint.

    Args:
        paths: checkpoint directories, oldest first.
        out: the directory to write.

    Returns:
        ``out``.
    """
    weights = average_checkpoints(paths)
    last = ckpt.resolve(paths[-1])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.make_temp_dir(out)
    try:
        save_file(weights, str(tmp / ckpt.WEIGHTS), metadata={"format": ckpt.FORMAT})
        for f in last.iterdir():
            if f.name not in _STATE_FILES:
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
        meta = ckpt.read_meta(last)
        trainer = dict(meta.get("trainer", {}), averaged_from=[str(ckpt.resolve(p)) for p in paths])
        new_meta = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "trainer": trainer}
        (tmp / ckpt.META).write_text(json.dumps(new_meta, indent=1) + "\n", encoding="utf-8")
        ckpt.settle_files(tmp)
        ckpt._replace_dir(tmp, out)
    except SafetensorError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ckpt.write_error(e, out) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def average_last(run_dir: str | os.PathLike, k: int, out: str | os.PathLike | None = None) -> Path:
    """Average the last ``k`` step checkpoints of a run into ``out`` (default ``run_dir/averaged``).

    Raises:
        ValueError: when the run holds fewer than ``k`` checkpoints (both counts in the message).
    """
    found = list_checkpoints(run_dir)
    if k < 1 or len(found) < k:
        raise ValueError(f"cannot average the last {k} checkpoints: {run_dir} holds {len(found)}")
    return write_averaged(found[-k:], out if out is not None else Path(run_dir) / "averaged")
