"""Checkpoints as directories of safetensors and JSON files, written atomically; no pickle anywhere.

A checkpoint directory holds:

- ``model.safetensors``: the weights (tied weights stored once, as ``safetensors.torch.save_model`` does);
- ``optimizer.safetensors`` / ``rng.safetensors``: optimiser state tensors, torch CPU/CUDA RNG states;
- ``checkpoint.json``: format marker, trainer state, scheduler state, the optimiser's non-tensor
  state (param groups), numpy and Python RNG states;
- ``config.json``: the model config (``to_dict()``), when given; tokenizer files from ``tokenizer.save(dir)``.

Everything is first written to a hidden temporary directory beside the target and then moved into place
with ``os.replace``; run directories point at their newest and best checkpoints through the symlinks
``latest`` and ``best``, also swapped with ``os.replace``. A crash mid-write leaves at most a stray
temporary directory, never a half-written checkpoint under a real name.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from qkv.data.files import dir_mode, file_mode, read_json_object

FORMAT = "qkv-checkpoint"
VERSION = 1
META = "checkpoint.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, foreign or does not fit the model."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read besides the tensors it loaded in place."""

    path: Path
    trainer_state: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] | None = None


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP/FSDP wrappers and ``torch.compile``."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


# ----------------------------------------------------------------------------------------- writing
def settle_files(folder: Path) -> None:
    """fsync every file of ``folder`` and give it the mode ``open()`` would (safetensors writes 0600)."""
    mode = file_mode()
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, mode)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser ``state_dict()`` (state keyed by parameter index, or by name as FSDP's full state dict
    is) as safetensors tensors + JSON; ``keys`` records each state entry's key in order."""
    tensors: dict[str, torch.Tensor] = {}
    keys = list(sd["state"])
    extra: dict[str, Any] = {"state": {}, "param_groups": [], "keys": keys}
    for i, key in enumerate(keys):
        for name, value in sd["state"][key].items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{i}.{name}"] = value.detach().cpu().contiguous()
            else:
                extra["state"].setdefault(str(i), {})[name] = value
    for i, group in enumerate(sd["param_groups"]):
        plain = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"group.{i}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = list(value) if isinstance(value, tuple) else value
        extra["param_groups"].append(plain)
    return tensors, extra


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch CPU/CUDA RNG states as tensors; numpy and Python ``random`` states as JSON values."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    plain = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))


def make_temp_dir(path: Path) -> Path:
    """A hidden temporary directory beside ``path``, with the mode ``mkdir`` would give it (umask applies)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, dir_mode())
    return tmp


def _replace_dir(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / path.name)  # the new one moves in right after; `old` is removed last
    os.replace(tmp, path)
    shutil.rmtree(old)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    trainer_state: dict[str, Any] | None = None,
    model_config: Any = None,
    tokenizer: Any = None,
    save_rng: bool = True,
    weights: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temporary directory, then ``os.replace``).

    Args:
        path: the checkpoint directory to create (replaced if it exists).
        model: the network (wrappers are unwrapped).
        optimizer: saved when given.
        scheduler: saved when given (its ``state_dict()`` must be JSON-able, as ``LambdaLR``'s is).
        trainer_state: JSON-able dict (step, epoch, best metric ...).
        model_config: a config with ``to_dict()`` or a dict, written to ``config.json``.
        tokenizer: an object with ``save(folder)``, called on the checkpoint directory.
        save_rng: also save torch, numpy and Python RNG states.
        weights: save these tensors instead of ``model``'s (e.g. a state dict gathered from FSDP shards).
        optimizer_state: save this optimiser state dict instead of ``optimizer``'s (e.g. FSDP's gathered one).

    Returns:
        The checkpoint directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path)
    try:
        meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "trainer": trainer_state or {}}
        if weights is None:
            save_model(unwrap(model), str(tmp / WEIGHTS), metadata={"format": FORMAT})
        else:
            save_file(_dedup(weights), str(tmp / WEIGHTS), metadata={"format": FORMAT})
        if optimizer_state is None and optimizer is not None:
            optimizer_state = optimizer.state_dict()
        if optimizer_state is not None:
            tensors, meta["optimizer"] = _optimizer_state(optimizer_state)
            save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"format": FORMAT})
        if scheduler is not None:
            meta["scheduler"] = scheduler.state_dict()
        if save_rng:
            tensors, meta["rng"] = rng_state()
            save_file(tensors, str(tmp / "rng.safetensors"), metadata={"format": FORMAT})
        if model_config is not None:
            cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
            _write_json(tmp / CONFIG, cfg)
        if tokenizer is not None:
            tokenizer.save(tmp)
        _write_json(tmp / META, meta)  # written last
        settle_files(tmp)
        _replace_dir(tmp, path)
    except SafetensorError as e:  # safetensors reports a failed write (disk full ...) as its own error type
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(e, path) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_error(e: Exception, path: str | os.PathLike) -> OSError:
    """An ``OSError`` naming ``path`` for a failed safetensors write ("... (os error 28)" becomes ENOSPC)."""
    found = re.search(r"os error (\d+)", str(e))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code) if found else f"cannot write safetensors: {e}", str(path))


def _dedup(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies, one per storage (tied weights are kept under their first name)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().cpu().contiguous()
    return out


def point(run_dir: str | os.PathLike, name: str, target: str | os.PathLike) -> None:
    """Atomically make ``run_dir/name`` a relative symlink to the checkpoint ``target`` in ``run_dir``."""
    run_dir = Path(run_dir)
    link = run_dir / name
    tmp = run_dir / f".{name}.link-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(Path(target).name, tmp)
    os.replace(tmp, link)


# ----------------------------------------------------------------------------------------- reading
def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint directory from itself or from a run directory (through its ``latest`` link).

    Raises:
        CheckpointError: when neither holds a qkv checkpoint.
    """
    path = Path(path)
    if (path / META).is_file():
        return path
    if (path / "latest" / META).is_file():
        return (path / "latest").resolve()
    if path.is_file():
        raise CheckpointError(
            f"{path} is a file; a qkv checkpoint is a directory holding {META} and {WEIGHTS}"
        )
    raise CheckpointError(f"no qkv checkpoint at {path} (no {META} there nor under {path / 'latest'})")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``checkpoint.json`` of a checkpoint directory."""
    file = resolve(path) / META
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e}); the checkpoint is truncated or foreign") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{file}: format is {found!r}, expected {FORMAT!r}")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{file}: version {meta['version']} is newer than this qkv ({VERSION})")
    return meta


def read_tensors(file: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors`` load with an error that names the file and says what is wrong."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    if not os.access(file, os.R_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
    try:
        return load_file(str(file), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{file}: cannot be read as safetensors ({e}); the file is truncated or not a qkv checkpoint"
        ) from e


def read_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The model config dict of a checkpoint, or ``None`` when it has none.

    Raises:
        CheckpointError: ``config.json`` is not a JSON object (the file is named).
    """
    file = resolve(path) / CONFIG
    if not file.is_file():
        return None
    try:
        return read_json_object(file, "model config")
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def stored_shapes(file: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a ``.safetensors`` header (no tensor data is read)."""
    from safetensors import safe_open

    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except SafetensorError as e:
        raise CheckpointError(f"{file}: cannot be read as safetensors ({e}); the file is truncated or foreign") from e


def check_fits(model: nn.Module, file: str | os.PathLike) -> None:
    """Compare ``model``'s tensors with the header of a weights file before any weight is allocated.

    ``model`` may live on the meta device (built from a config that is not trusted yet): a config asking for
    more or larger tensors than the file holds fails here, with the first differences named.

    Raises:
        CheckpointError: missing, unexpected or misshapen tensors.
    """
    stored = stored_shapes(file)
    groups: dict[int, list[str]] = {}  # tied tensors are stored once, under one of their names
    model = unwrap(model)
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(t), []).append(name)
    expected = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    missing = [names[0] for names in groups.values()
               if names[0] in expected and not any(n in stored for n in names)]
    unexpected = sorted(set(stored) - set(expected))
    misshapen = [f"{k} {stored[k]} (model: {expected[k]})" for k in sorted(set(stored) & set(expected))
                 if stored[k] != expected[k]]
    if missing or unexpected or misshapen:
        raise CheckpointError(f"{file}: does not fit {type(model).__name__} built from its config: missing "
                              f"{missing[:4]}, unexpected {unexpected[:4]}, misshapen {misshapen[:4]}")


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> None:
    """Load ``model.safetensors`` of a checkpoint (or a ``.safetensors`` file) into ``model`` in place."""
    path = Path(path)
    file = path if path.suffix == ".safetensors" else resolve(path) / WEIGHTS
    model = unwrap(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    state = read_tensors(file, device)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"{file}: does not fit {type(model).__name__}: {e}") from e
    tied = {n for names in _shared_names(model) for n in names}
    missing = [k for k in missing if k not in tied]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{file}: does not fit {type(model).__name__}: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}"
        )


def _shared_names(model: nn.Module) -> list[list[str]]:
    by_ptr: dict[int, list[str]] = {}
    for name, t in model.state_dict().items():
        by_ptr.setdefault(t.data_ptr(), []).append(name)
    return [names for names in by_ptr.values() if len(names) > 1]


def read_optimizer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The optimiser ``state_dict()`` a checkpoint holds, keyed as it was saved (index or parameter name)."""
    folder = resolve(path)
    extra = read_meta(folder).get("optimizer")
    if extra is None:
        raise CheckpointError(f"{folder}: holds no optimizer state (weights-only checkpoint)")
    tensors = read_tensors(folder / "optimizer.safetensors")
    keys = extra.get("keys")
    key_of = (lambda i: keys[i]) if keys is not None else (lambda i: i)  # older checkpoints: indices
    state: dict[Any, dict[str, Any]] = {}
    groups = [dict(g) for g in extra["param_groups"]]
    for name, value in tensors.items():
        kind, idx, field = name.split(".", 2)
        if kind == "state":
            state.setdefault(key_of(int(idx)), {})[field] = value
        else:
            groups[int(idx)][field] = value
    for idx, values in extra.get("state", {}).items():
        state.setdefault(key_of(int(idx)), {}).update(values)
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    try:
        optimizer.load_state_dict(read_optimizer_state(folder))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{folder}: optimizer state does not fit this optimizer: {e}") from e


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    restore_rng: bool = False,
) -> Checkpoint:
    """Load a checkpoint into the given objects in place.

    Args:
        path: a checkpoint directory, or a run directory (its ``latest`` is used).
        model: receives the weights when given.
        optimizer: receives the optimiser state when given (the checkpoint must have one).
        scheduler: receives the scheduler state when given.
        restore_rng: also restore torch, numpy and Python RNG states (for bit-exact resumption).

    Returns:
        The trainer state and model config it held.

    Raises:
        CheckpointError: missing, truncated or foreign files, or state that does not fit.
    """
    folder = resolve(path)
    meta = read_meta(folder)
    if model is not None:
        load_weights(model, folder)
    if optimizer is not None:
        _load_optimizer(optimizer, folder)
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng and "rng" in meta:
        set_rng_state(read_tensors(folder / "rng.safetensors"), meta["rng"])
    return Checkpoint(path=folder, trainer_state=meta.get("trainer", {}), model_config=read_config(folder))
