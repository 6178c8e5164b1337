"""Inputs the commands must not trust: long lines, bad counts, tampered or broken runs. Each is one line on
stderr (a warning, or an error with exit 2) that names the file and line where there is one."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.cli.faults import assert_one_line_error, run_cli


@pytest.fixture()
def copy_of(tmp_path):
    def copy(run):
        dest = tmp_path / "copy"
        shutil.copytree(run, dest, symlinks=True)
        return dest, (dest / "latest").resolve()

    return copy


# ------------------------------------------------------------------------------------ long lines (item 10)
def test_classify_and_embed_truncate_long_lines_with_a_warning(classify_run, capsys, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("good film\n\n" + "good " * 20 + "\nbad film\n", encoding="utf-8")
    for command in ("classify", "embed"):
        rc, out, err = run_cli(capsys, command, classify_run, "--input", f)
        assert rc == 0, err
        # classify keeps a blank line in place of the blank input line (one output line per input line)
        assert len(out.splitlines()) == (4 if command == "classify" else 3)
        assert err.strip() == f"qkv {command}: warning: {f} line 3 has 100 tokens; truncated to the model's 16 " \
                              "(as in training)"


def test_evaluate_names_the_long_source_line(tiny_run, capsys, tmp_path):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("abc\nab\n" + "x " * 40 + "\n", encoding="utf-8")
    ref.write_text("abc\nab\nx\n", encoding="utf-8")
    rc, _, err = run_cli(capsys, "evaluate", tiny_run, "--src", src, "--ref", ref)
    assert_one_line_error(rc, err, f"{src} line 3 has", "reads at most 32")


def test_evaluate_classification_warns_of_long_examples(classify_run, capsys, tmp_path):
    data = tmp_path / "test.txt"
    data.write_text("1 good film\n0 " + "bad " * 10 + "\n", encoding="utf-8")
    rc, out, err = run_cli(capsys, "evaluate", classify_run, "--data", data)
    assert rc == 0 and "(2 examples)" in out, err
    assert "1 example(s)" in err and "example 2" in err


# ------------------------------------------------------------------------------------ counts (item 11)
@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "RUN", "--src", "s", "--ref", "r", "--limit", "-1"], "--limit must be >= 1"),
    (["generate", "RUN", "--max-new-tokens", "-5"], "--max-new-tokens must be >= 1"),
    (["demo", "--n-test", "0", "--steps", "1", "--n-train", "20", "--out", "OUT"], "--n-test must be >= 1"),
    (["train", "CFG", "--set", "data.batch_size=0"], "data.batch_size must be >= 1"),
])
def test_bad_counts_are_refused_before_any_work(tiny_run, capsys, tmp_path, args, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: translation\ndata: {{source: copy}}\nout_dir: {tmp_path / 'run'}\n", encoding="utf-8")
    names = {"RUN": tiny_run, "CFG": cfg, "OUT": tmp_path / "demo"}
    rc, _, err = run_cli(capsys, *[names.get(a, a) for a in args])
    assert_one_line_error(rc, err, fragment)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ broken runs (items 9, 11)
def _rewrite_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(json.dumps(data))


def test_a_tampered_config_asking_for_a_huge_model_is_refused_before_allocating(tiny_run, copy_of, capsys):
    run, ckpt = copy_of(tiny_run)
    _rewrite_json(ckpt / "config.json", **{"model.d_ff": 2**45})  # a 2^45 x 16 weight: 2 PiB, no allocator has it
    rc, _, err = run_cli(capsys, "translate", run, "--input", os.devnull)
    assert_one_line_error(rc, err, "model.safetensors: does not fit", "misshapen")


def test_broken_run_files_are_named(tiny_run, copy_of, capsys, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("abc\n", encoding="utf-8")
    run, ckpt = copy_of(tiny_run)
    (ckpt / "config.json").write_text("{not json")
    rc, _, err = run_cli(capsys, "translate", run, "--input", src)
    assert_one_line_error(rc, err, f"{ckpt / 'config.json'}: not valid JSON")
    shutil.rmtree(run)
    run, ckpt = copy_of(tiny_run)
    (run / "recipe.json").write_text("[1, 2")
    rc, _, err = run_cli(capsys, "translate", run, "--input", src)
    assert_one_line_error(rc, err, f"{run / 'recipe.json'}: not a valid recipe")


def test_a_newer_checkpoint_format_is_refused(tiny_run, copy_of, capsys, tmp_path):
    run, ckpt = copy_of(tiny_run)
    _rewrite_json(ckpt / "checkpoint.json", version=99)
    rc, _, err = run_cli(capsys, "translate", run, "--input", os.devnull)
    assert_one_line_error(rc, err, "version 99 is newer")


def test_a_tokenizer_larger_than_the_model_is_refused(tiny_run, copy_of, capsys):
    run, ckpt = copy_of(tiny_run)
    vocab = json.loads((ckpt / "tokenizer.json").read_text())["model"]["vocab"]
    _rewrite_json(ckpt / "tokenizer.json", **{"model.vocab": {**vocab, "zzz-extra": max(vocab.values()) + 1}})
    rc, _, err = run_cli(capsys, "translate", run, "--input", os.devnull)
    assert_one_line_error(rc, err, "the tokenizer has", "does not belong to these weights")


def test_weights_holding_nan_are_refused(tiny_run, copy_of, capsys):
    run, ckpt = copy_of(tiny_run)
    state = load_file(str(ckpt / "model.safetensors"))
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "qkv-checkpoint"})
    rc, _, err = run_cli(capsys, "translate", run, "--input", os.devnull)
    assert_one_line_error(rc, err, "hold NaN or inf")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of any mode")
def test_an_unreadable_weights_file_says_so(tiny_run, copy_of, capsys):
    run, ckpt = copy_of(tiny_run)
    (ckpt / "model.safetensors").chmod(0)
    rc, _, err = run_cli(capsys, "translate", run, "--input", os.devnull)
    assert_one_line_error(rc, err, "model.safetensors: Permission denied")
