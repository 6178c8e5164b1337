"""Helpers of the CLI fault suite: tiny recipes, the ``qkv`` command in-process and as a subprocess, faults."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qkv.cli import main

ROOT = Path(__file__).resolve().parents[2]


def translation_recipe(folder: Path, out: Path, *, steps: int = 2, d_model: int = 16, extra: str = "") -> Path:
    """A copy task with a byte-level BPE tokenizer and a one-layer Transformer: seconds to train."""
    cfg = folder / f"copy_{out.name}.yaml"
    cfg.write_text(
        "task: translation\nmodel: transformer-tiny\n"
        f"model_options: {{d_model: {d_model}, d_ff: {2 * d_model}, num_heads: 2, num_encoder_layers: 1, "
        "num_decoder_layers: 1, max_len: 32}\n"
        "data: {source: copy, n_train: 64, n_valid: 8, n_test: 8, max_length: 6, batch_size: 16}\n"
        "tokenizer: {kind: bpe, vocab_size: 262, min_frequency: 1}\n"
        f"train: {{steps: {steps}, warmup: 0, progress: false, device: cpu, log_every: 1{extra}}}\n"
        "decode: {strategy: greedy, max_len: 8}\n"
        f"out_dir: {out}\n",
        encoding="utf-8",
    )
    return cfg


def classify_recipe(folder: Path, out: Path) -> Path:
    """Sentiment-like labelled lines, a one-layer encoder with ``max_len`` 16."""
    data = folder / "labelled.txt"
    data.write_text("".join(f"{i % 2} {'good' if i % 2 else 'bad'} film {i}\n" for i in range(24)), encoding="utf-8")
    cfg = folder / "classify.yaml"
    cfg.write_text(
        "task: classify\nmodel: encoder-small\n"
        "model_options: {num_layers: 1, d_model: 16, num_heads: 2, d_ff: 32, max_len: 16}\n"
        f"data: {{source: files, train: {data}, valid: {data}, batch_size: 8}}\n"
        "tokenizer: {kind: char}\n"
        "train: {steps: 2, warmup: 0, progress: false, device: cpu}\n"
        f"out_dir: {out}\n",
        encoding="utf-8",
    )
    return cfg


def run_cli(capsys, *args: str, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """``qkv ARGS`` in this process: (exit status, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def qkv(*args: str, stdin: bytes | None = None, file_size_limit: int | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m qkv ARGS`` as a subprocess; ``file_size_limit`` caps file sizes (writes past it: EFBIG)."""

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "qkv", *map(str, args)], input=stdin, capture_output=True,
                          env=env(), cwd=ROOT, timeout=timeout,
                          preexec_fn=limit if file_size_limit is not None else None)


def start_qkv(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qkv", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env(), cwd=ROOT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Until ``path`` exists (the trainer got that far); fails if the process ends first."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"qkv ended early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def assert_one_line_error(rc: int, err: str, *fragments: str) -> str:
    """Exit status 2 and exactly one stderr line starting ``qkv`` holding every fragment."""
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("qkv ") and "Traceback" not in err, (rc, err)
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch):
    """Make ``folder`` read-only. Root ignores permission bits, so there writes under it are refused by
    patching the calls that create files and folders (every qkv write starts with one of them)."""
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            inside = str(folder.resolve()) + os.sep
            real_open, real_mkdir = os.open, os.mkdir

            def denied(path) -> bool:
                return str(Path(os.fspath(path)).resolve()).startswith(inside)

            def fake_open(path, flags, *a, **kw):
                if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and denied(path):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
                return real_open(path, flags, *a, **kw)

            def fake_mkdir(path, *a, **kw):
                if denied(path):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
                return real_mkdir(path, *a, **kw)

            monkeypatch.setattr(os, "open", fake_open)
            monkeypatch.setattr(os, "mkdir", fake_mkdir)
        yield folder
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
