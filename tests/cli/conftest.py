"""Tiny trained runs shared by the CLI tests (seconds to train), and a helper to run ``qkv`` as a subprocess.
The fault suite's runs (``tiny_run``, ``classify_run``) are trained once per session too."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qkv.cli import main
from tests.cli.faults import classify_recipe, translation_recipe

TINY_SEQ2SEQ = "{d_model: 32, d_ff: 64, num_heads: 2, num_encoder_layers: 1, num_decoder_layers: 1}"


def write_recipe(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def dates_recipe(tmp_path_factory) -> Path:
    """A translation recipe on generated dates: a 1+1 layer Transformer of width 32, 10 steps."""
    folder = tmp_path_factory.mktemp("dates")
    return write_recipe(folder, "dates", (
        f"task: translation\nmodel: transformer-tiny\nmodel_options: {TINY_SEQ2SEQ}\n"
        "data: {source: dates, n_train: 200, n_valid: 16, n_test: 24, batch_size: 32}\n"
        "train: {steps: 10, eval_every: 5, warmup: 1, lr: 1.0e-2, progress: false, log_every: 5}\n"
        "decode: {strategy: greedy, max_len: 12}\n"
        f"out_dir: {folder / 'run'}\n"))


@pytest.fixture(scope="session")
def dates_training(dates_recipe) -> tuple[Path, str]:
    """The dates recipe trained, and what ``qkv train`` printed on stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", str(dates_recipe)]) == 0
    return dates_recipe.parent / "run", out.getvalue()


@pytest.fixture(scope="session")
def dates_run(dates_training) -> Path:
    return dates_training[0]


def qkv(*args: str, stdin: str | None = None, cwd: str | Path | None = None, timeout: float = 120):
    """``python -m qkv ARGS`` in a fresh process: ``CompletedProcess`` with text stdout/stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "qkv", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained tiny translation run (byte-level BPE, ``max_len`` 32). Tests that change it copy it first."""
    folder = tmp_path_factory.mktemp("translation")
    assert main(["train", str(translation_recipe(folder, folder / "run"))]) == 0
    return folder / "run"


@pytest.fixture(scope="session")
def classify_run(tmp_path_factory):
    """A trained tiny classifier (characters, ``max_len`` 16)."""
    folder = tmp_path_factory.mktemp("classify")
    assert main(["train", str(classify_recipe(folder, folder / "run"))]) == 0
    return folder / "run"


def _trained(tmp_path_factory, name: str, files: dict[str, str], body: str) -> Path:
    """Write ``files`` and a recipe (``body`` plus its ``out_dir``) into a fresh folder, train, return the run."""
    folder = tmp_path_factory.mktemp(name)
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    assert main(["train", str(write_recipe(folder, name, body + f"out_dir: {folder / 'run'}\n"))]) == 0
    return folder / "run"


@pytest.fixture(scope="session")
def lm_run_dir(tmp_path_factory) -> Path:
    """A character language model (1 layer, width 32, context 16) trained for 3 steps."""
    return _trained(tmp_path_factory, "lm", {"text.txt": "to be or not to be, that is the question.\n" * 40}, (
        "task: lm\nmodel: gpt-char-small\n"
        "model_options: {num_layers: 1, d_model: 32, num_heads: 2, dropout: 0.0}\n"
        "data: {source: files, train: text.txt, block_size: 16, batch_size: 4}\n"
        "train: {steps: 3, eval_every: 3, progress: false}\n"))


@pytest.fixture(scope="session")
def labelled_run(tmp_path_factory) -> Path:
    """A sentiment classifier (1 layer, width 32, character tokens, a test split) trained for 3 steps."""
    rows = ["1 a fine film", "0 a dull film", "1 witty and warm", "0 flat and tired"] * 8
    return _trained(tmp_path_factory, "labelled", {"train.txt": "\n".join(rows) + "\n"}, (
        "task: classify\nmodel: encoder-small\n"
        "model_options: {num_layers: 1, d_model: 32, num_heads: 2, dropout: 0.0}\n"
        "data: {source: files, train: train.txt, valid: train.txt, test: train.txt, batch_size: 8}\n"
        "tokenizer: {kind: char}\n"
        "train: {steps: 3, eval_every: 3, progress: false}\n"))
