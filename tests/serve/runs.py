"""Tiny trained runs for the server tests (a few training steps each: seconds), and a real uvicorn server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from qkv.recipes import load_recipe, train

TEXT = "to be or not to be, that is the question. café déjà vu, naïve 日本語 ✓\n" * 30


def _train(folder: Path, yaml: str) -> Path:
    cfg = folder / "recipe.yaml"
    cfg.write_text(yaml + f"out_dir: {folder / 'run'}\n", encoding="utf-8")
    train(load_recipe(str(cfg), []))
    return folder / "run"


def lm_run(folder: Path) -> Path:
    """A byte-level BPE language model (multi-byte characters split across tokens); no positional table, so
    no context limit: requests may run long (up to the server's 512 tokens)."""
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    return _train(folder, (
        "task: lm\nmodel: gpt-char-small\n"
        "model_options: {num_layers: 2, d_model: 32, num_heads: 2, dropout: 0.0, positional: none}\n"
        f"data: {{source: files, train: {folder / 'text.txt'}, block_size: 48, batch_size: 4}}\n"
        "tokenizer: {kind: bpe, vocab_size: 300, min_frequency: 2}\n"
        "train: {steps: 4, eval_every: 4, progress: false}\n"))


def mt_run(folder: Path) -> Path:
    """A dates translator (Transformer, character vocabulary)."""
    return _train(folder, (
        "task: translation\nmodel: transformer-tiny\n"
        "model_options: {d_model: 32, d_ff: 64, num_heads: 4, share_embeddings: true}\n"
        "data: {source: dates, n_train: 200, n_valid: 4, n_test: 4, batch_size: 16}\n"
        "train: {steps: 4, eval_every: 4, progress: false}\n"
        "decode: {strategy: greedy, max_len: 12}\n"))


def encoder_run(folder: Path) -> Path:
    """A two-class sentence classifier."""
    lines = [f"{i % 2} {'good fine great' if i % 2 else 'bad awful poor'} movie {i}" for i in range(40)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return _train(folder, (
        "task: classify\nmodel: encoder-small\n"
        "model_options: {num_layers: 1, d_model: 32, num_heads: 2, d_ff: 64, dropout: 0.0}\n"
        f"data: {{source: files, train: {folder / 'train.txt'}, batch_size: 8, max_len: 32}}\n"
        "train: {steps: 4, eval_every: 4, progress: false}\n"))


class LiveServer:
    """``uvicorn`` serving ``app`` on 127.0.0.1 at an ephemeral port, in a thread of this process."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 20 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        with contextlib.suppress(OSError):
            self.sock.close()
