"""Paths: a recipe's data paths are read from the recipe's directory (from any current directory); a missing
one names the directory tried."""

from __future__ import annotations

import os

from qkv.recipes import load_recipe

from .conftest import qkv as run_qkv


def test_recipe_data_paths_are_relative_to_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "text.txt").write_text("hello\n", encoding="utf-8")
    cfg = tmp_path / "configs" / "lm.yaml"
    cfg.parent.mkdir()
    cfg.write_text("task: lm\nmodel: gpt-char-small\ndata: {source: files, train: ../data/text.txt}\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(os.path.relpath(cfg, elsewhere))
    assert os.path.samefile(recipe.data.train, tmp_path / "data" / "text.txt")
    # --set paths are the command line's: relative to the current directory
    assert load_recipe(cfg, ["data.train=mine.txt"]).data.train == "mine.txt"


def test_shipped_configs_find_their_data_from_any_directory():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    recipe = load_recipe(root / "configs" / "shakespeare_char.yaml")
    assert recipe.data.train == str(root.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")


def test_missing_data_file_names_the_directory_tried(tmp_path):
    cfg = tmp_path / "lm.yaml"
    cfg.write_text("task: lm\nmodel: gpt-char-small\ndata: {source: files, train: nope.txt}\n"
                   f"out_dir: {tmp_path / 'run'}\n", encoding="utf-8")
    done = run_qkv("train", str(cfg), cwd=tmp_path.parent)
    assert done.returncode == 2, done.stderr
    assert str(tmp_path / "nope.txt") in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_attention_writes_beside_the_run(dates_run, tmp_path, monkeypatch, capsys):
    from qkv.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["attention", str(dates_run), "--text", "3 mars 2019"]) == 0
    assert (dates_run / "attention" / "attention.html").is_file()
    assert not (tmp_path / "attention").exists()


def test_demo_hints_work_from_any_directory(tmp_path):
    import shlex

    from qkv.recipes.demo import next_steps

    hints = next_steps(tmp_path / "demo").splitlines()[1:]
    for hint in hints:
        command = shlex.split(hint.split("|")[-1].split("#")[0])
        paths = [a for a in command if "/" in a]
        assert paths and all(os.path.isabs(a) for a in paths), hint
