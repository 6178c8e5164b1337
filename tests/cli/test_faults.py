"""The CLI under faults: failed commands keep their files, read-only folders, a full disk, bad bytes, two
trainers on one run directory, interrupted training, tampered runs. Every failure is one line and exit 2
(a signal: 128 + its number), never a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal

import pytest

from tests.cli.faults import (
    assert_one_line_error,
    qkv,
    read_only,
    run_cli,
    start_qkv,
    translation_recipe,
    wait_for,
)


@pytest.fixture()
def run(tiny_run):
    return tiny_run


# ------------------------------------------------------------------------------------ outputs (item 2)
def test_a_failed_translate_leaves_its_output_file_as_it_was(run, capsys, tmp_path):
    f = tmp_path / "in.txt"
    text = "abc\n" + "x y z " * 40 + "\nabd\n"  # line 2 is longer than the model reads
    f.write_text(text, encoding="utf-8")
    rc, _, err = run_cli(capsys, "translate", run, "--input", f, "--output", f)
    assert_one_line_error(rc, err, f"{f} line 2 has", "reads at most 32")
    assert f.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["in.txt"]  # no temporary file left behind


def test_a_full_disk_while_writing_keeps_the_old_output(run, capsys, tmp_path, monkeypatch):
    src, out = tmp_path / "src.txt", tmp_path / "out.txt"
    src.write_text("abc\nab\n", encoding="utf-8")
    out.write_text("previous translations\n", encoding="utf-8")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = run_cli(capsys, "translate", run, "--input", src, "--output", out)
    assert_one_line_error(rc, err, "No space left on device")
    assert out.read_text(encoding="utf-8") == "previous translations\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "src.txt"]


def test_outputs_written_on_success_follow_the_umask(run, capsys, tmp_path, monkeypatch):
    src, out = tmp_path / "src.txt", tmp_path / "out.txt"
    src.write_text("abc\n", encoding="utf-8")
    old = os.umask(0o022)
    try:
        rc, _, err = run_cli(capsys, "translate", run, "--input", src, "--output", out)
    finally:
        os.umask(old)
    assert rc == 0, err
    assert out.stat().st_mode & 0o777 == 0o644 and len(out.read_text().splitlines()) == 1


# ------------------------------------------------------------------------------------ OSErrors (item 9)
def test_read_only_folders_are_one_line_errors(run, capsys, tmp_path, monkeypatch):
    src = tmp_path / "src.txt"
    src.write_text("abc\n", encoding="utf-8")
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = translation_recipe(tmp_path, ro / "run")
    with read_only(ro, monkeypatch):
        rc, _, err = run_cli(capsys, "translate", run, "--input", src, "--output", ro / "out.txt")
        assert_one_line_error(rc, err, str(ro), "Permission denied")
        rc, _, err = run_cli(capsys, "train", cfg)
        assert_one_line_error(rc, err, str(ro / "run"), "Permission denied")
        rc, _, err = run_cli(capsys, "average", run, "--last", "1", "--out", ro / "avg")
        assert_one_line_error(rc, err, str(ro), "Permission denied")
    assert list(ro.iterdir()) == []


def test_directories_and_files_in_the_wrong_place(run, capsys, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("abc\n", encoding="utf-8")
    rc, _, err = run_cli(capsys, "translate", run, "--input", src, "--output", tmp_path)
    assert_one_line_error(rc, err, str(tmp_path))
    rc, _, err = run_cli(capsys, "attention", run, "--text", "abc", "--out", src)
    assert_one_line_error(rc, err, str(src))
    assert src.read_text(encoding="utf-8") == "abc\n"


def test_full_disk_during_checkpoint_save_is_one_line(tmp_path):
    # model.safetensors of this model is larger than the limit; the recipe and the tokenizer are not
    cfg = translation_recipe(tmp_path, tmp_path / "run", d_model=64)
    proc = qkv("train", cfg, file_size_limit=40_000)
    err = proc.stderr.decode()
    assert_one_line_error(proc.returncode, err, "File too large", str(tmp_path / "run"))
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".step")]  # no half checkpoint


def test_bad_bytes_on_stdin_name_the_line(run, capsys, monkeypatch):
    rc, out, err = run_cli(capsys, "translate", run, stdin=b"abc\n\xff\xfeab\n", monkeypatch=monkeypatch)
    assert_one_line_error(rc, err, "stdin: line 2 is not valid UTF-8")
    assert out == ""


def test_corrupt_gzip_input_is_one_line(run, capsys, tmp_path):
    bad = tmp_path / "in.txt.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"not deflate data at all")
    rc, _, err = run_cli(capsys, "translate", run, "--input", bad)
    assert_one_line_error(rc, err, str(bad))


def test_unavailable_devices_are_one_line(run, capsys, tmp_path):
    cfg = translation_recipe(tmp_path, tmp_path / "r1")
    rc, _, err = run_cli(capsys, "train", cfg, "--set", "train.device=tpu")
    assert_one_line_error(rc, err, "tpu")
    if not __import__("torch").cuda.is_available():
        rc, _, err = run_cli(capsys, "train", cfg, "--set", "train.device=cuda", "--overwrite")
        assert_one_line_error(rc, err, "cuda", "no CUDA")


# ------------------------------------------------------------------------------------ run directories (3, 6, 11)
def test_a_failed_resume_leaves_the_run_as_it_was(run, capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be\n" * 20, encoding="utf-8")
    lm = tmp_path / "lm.yaml"
    lm.write_text(f"task: lm\nmodel: gpt-char-small\nmodel_options: {{num_layers: 1, d_model: 16, num_heads: 2}}\n"
                  f"data: {{source: files, train: {text}, block_size: 8, batch_size: 4}}\n"
                  f"train: {{steps: 2, progress: false}}\ndecode: {{strategy: sample}}\nout_dir: {run}\n")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc, _, err = run_cli(capsys, "train", lm, "--resume")
    assert_one_line_error(rc, err, "cannot resume", "translation")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_needs_a_checkpoint(capsys, tmp_path):
    cfg = translation_recipe(tmp_path, tmp_path / "empty")
    rc, _, err = run_cli(capsys, "train", cfg, "--resume")
    assert_one_line_error(rc, err, "nothing to resume", str(tmp_path / "empty"))


def test_a_second_run_into_a_used_directory_needs_overwrite(capsys, tmp_path):
    cfg = translation_recipe(tmp_path, tmp_path / "run", steps=2)
    assert run_cli(capsys, "train", cfg)[0] == 0
    rc, _, err = run_cli(capsys, "train", cfg)
    assert_one_line_error(rc, err, "not empty", "--resume", "--overwrite")
    rc, _, err = run_cli(capsys, "train", cfg, "--set", "train.steps=1", "--overwrite")
    assert rc == 0, err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1]  # the old run's rows are gone
    assert sorted(p.name for p in (tmp_path / "run").glob("step_*")) == ["step_00000001"]


def test_runs_follow_the_umask(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        cfg = translation_recipe(tmp_path, tmp_path / "run")
        assert run_cli(capsys, "train", cfg)[0] == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    step = (run / "latest").resolve()
    assert step.stat().st_mode & 0o777 == 0o755
    for f in (run / "recipe.json", step / "tokenizer.json", step / "model.safetensors", run / "training_curve.png"):
        assert f.stat().st_mode & 0o777 == 0o644, f


# ------------------------------------------------------------------------------------ signals, concurrency (5, 6)
def test_a_second_trainer_is_refused_and_signals_exit_143_and_130(capsys, tmp_path):
    cfgs = [translation_recipe(tmp_path, tmp_path / name, steps=100_000, extra=", save_every: 1")
            for name in ("term", "int")]
    procs = [start_qkv("train", cfgs[0]), start_qkv("train", cfgs[1], "--set", "train.lr=0.001")]
    try:
        for name, proc in zip(("term", "int"), procs, strict=True):
            wait_for(tmp_path / name / "latest", proc)
        rc, _, err = run_cli(capsys, "train", cfgs[0], "--resume", "--set", "train.steps=1")
        assert_one_line_error(rc, err, "in use by another trainer", f"pid {procs[0].pid}")
        procs[0].send_signal(signal.SIGTERM)
        procs[1].send_signal(signal.SIGINT)
        errs = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [143, 130], errs
    lines = [e.strip().splitlines()[-1] for e in errs]
    assert "interrupted by SIGTERM" in lines[0] and lines[0].endswith(f"resume with: qkv train {cfgs[0]} --resume")
    assert lines[1].endswith(f"resume with: qkv train {cfgs[1]} --set train.lr=0.001 --resume")
    assert "interrupted by SIGINT" in lines[1] and not any("Traceback" in e for e in errs)
    assert not (tmp_path / "term" / ".lock").exists()
    rc, _, err = run_cli(capsys, "train", cfgs[0], "--set", "train.steps=1", "--overwrite")  # the lock is free
    assert rc == 0, err
