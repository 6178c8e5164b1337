"""Run directories: one trainer at a time (an exclusive lock) and no silent mixing of two runs.

:func:`run_lock` holds ``fcntl.flock`` on ``<run dir>/.lock`` for as long as its context lasts; a second
process that asks for the same directory fails at once with :class:`RunDirError` naming the holder's pid.
The lock is re-entrant within one process (the recipe layer holds it while the trainer it starts takes it
again). :func:`prepare_run_dir` refuses to start a new run in a directory that already holds one, unless
the caller resumes it or asks to overwrite it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from qkv.training.checkpoint import META

__all__ = ["LOCK", "RunDirError", "run_lock", "prepare_run_dir", "RUN_FILES"]

LOCK = ".lock"
#: What a training run writes into its directory; ``overwrite`` removes these (and nothing else).
RUN_FILES = ("step_*", ".step_*", "latest", "best", "averaged", ".averaged*", "metrics.jsonl", "metrics_*.csv",
             "tensorboard", "recipe.json", "training_curve.png", "attention_*.png", "attention.html")

_held: dict[str, list[int]] = {}  # resolved run dir -> [lock file descriptor, depth]


class RunDirError(ValueError):
    """A run directory that is in use, already holds a run, or has nothing to resume."""


def _acquire(path: Path) -> int:
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"run directory {path.parent} is in use by another trainer (pid {holder}); "
                              "wait for it to finish or train into another directory") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous holder removed the file between our open and flock
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise RunDirError(f"cannot lock run directory {path.parent}: {path} keeps changing")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if needed) for the duration of the context.

    Raises:
        RunDirError: another process holds it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key not in _held:
        _held[key] = [_acquire(run_dir / LOCK), 0]
    _held[key][1] += 1
    try:
        yield run_dir
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            fd = _held.pop(key)[0]
            with contextlib.suppress(OSError):
                (run_dir / LOCK).unlink()  # while still locked: a waiting process re-opens the path
            os.close(fd)


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> None:
    """Check (and with ``overwrite`` clear) a run directory before training into it; call under :func:`run_lock`.

    Raises:
        RunDirError: ``resume`` and ``overwrite`` together; ``resume`` without a checkpoint to resume from;
            a directory that already holds files, without either flag.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("choose one of --resume (continue the run) and --overwrite (start it again)")
    entries = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK) if run_dir.is_dir() else []
    if resume:
        if not (run_dir / "latest" / META).is_file():
            raise RunDirError(f"nothing to resume: {run_dir} holds no checkpoint (no latest/{META}); "
                              "drop --resume to start a new run there")
        return
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RunDirError(f"run directory {run_dir} is not empty ({shown}); pass --resume to continue that run "
                          "or --overwrite to replace it (Python: train(recipe, resume=True) / overwrite=True)")
    for pattern in RUN_FILES:
        for p in run_dir.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
