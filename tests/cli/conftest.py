"""Tiny trained runs shared by the CLI tests (seconds to train), and a helper to run ``qkv`` as a subprocess.
The fault suite's runs (``tiny_run``, ``classify_run``) are trained once per session too."""

from __future__ import annotations

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
    """A translation recipe on generated dates: a 1+1 layer Transformer of width 32, 4 steps."""
    folder = tmp_path_factory.mktemp("dates")
    return write_recipe(folder, "dates", (
        f"task: translation\nmodel: transformer-tiny\nmodel_options: {TINY_SEQ2SEQ}\n"
        "data: {source: dates, n_train: 200, n_valid: 16, n_test: 24, batch_size: 32}\n"
        "train: {steps: 4, eval_every: 2, warmup: 1, lr: 3.0e-3, progress: false, log_every: 2}\n"
        "decode: {strategy: greedy, max_len: 12}\n"
        f"out_dir: {folder / 'run'}\n"))


@pytest.fixture(scope="session")
def dates_run(dates_recipe) -> Path:
    assert main(["train", str(dates_recipe)]) == 0
    return dates_recipe.parent / "run"


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
