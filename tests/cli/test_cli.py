"""The qkv command end to end: a reduced demo, then every command on its run; bad input exits 2."""

from __future__ import annotations

import io
import json
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from qkv.cli import main
from qkv.data import synthetic


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    rc = main(["demo", "--steps", "12", "--n-train", "400", "--n-test", "40", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    (folder / "text.txt").write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    cfg = folder / "lm.yaml"
    cfg.write_text(
        "task: lm\nmodel: gpt-char-small\n"
        "model_options: {num_layers: 1, d_model: 32, num_heads: 2, dropout: 0.0}\n"
        f"data: {{source: files, train: {folder / 'text.txt'}, block_size: 16, batch_size: 4}}\n"
        "train: {steps: 3, eval_every: 3, progress: false}\n"
        f"out_dir: {folder / 'run'}\n",
        encoding="utf-8",
    )
    assert main(["train", str(cfg)]) == 0
    return folder / "run"


def run_cli(args, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_demo_writes_checkpoint_curve_and_attention_pictures(demo_run, capsys):
    names = {p.name for p in demo_run.iterdir()}
    assert {"training_curve.png", "attention_0.png", "attention.html", "metrics.jsonl", "latest"} <= names
    img = mpimg.imread(demo_run / "attention_0.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert np.ptp(img[..., :3]) > 0.1  # not a blank picture
    html = (demo_run / "attention.html").read_text(encoding="utf-8")
    assert "encoder-decoder attention" in html and "<script" in html
    assert (demo_run / "latest" / "model.safetensors").is_file()


def test_translate_reads_stdin_writes_one_line_each(demo_run, capsys, monkeypatch):
    rc, out, err = run_cli(["translate", str(demo_run)], capsys, "3 mars 2019\nMarch 3rd, 2019\n", monkeypatch)
    assert rc == 0, err
    assert len(out.splitlines()) == 2


def test_evaluate_translation_prints_bleu_signature_and_by_length(demo_run, capsys, tmp_path):
    pairs = synthetic.date_pairs(20, seed=5)
    (tmp_path / "src.txt").write_text("\n".join(s for s, _ in pairs) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(t for _, t in pairs) + "\n", encoding="utf-8")
    plot = tmp_path / "len.png"
    rc, out, err = run_cli(["evaluate", str(demo_run), "--src", str(tmp_path / "src.txt"), "--ref",
                            str(tmp_path / "ref.txt"), "--by-length", "--plot", str(plot)], capsys)
    assert rc == 0, err
    assert "BLEU" in out and "nrefs:1" in out and "exact match" in out and plot.is_file()


def test_attention_command_writes_png_and_html(demo_run, capsys, tmp_path):
    rc, out, err = run_cli(["attention", str(demo_run), "--text", "Sunday 03.03.19", "--out", str(tmp_path)], capsys)
    assert rc == 0, err
    assert (tmp_path / "attention.html").is_file() and list(tmp_path.glob("cross_layer*.png"))


def test_average_command(demo_run, capsys, tmp_path):
    rc, out, err = run_cli(["average", str(demo_run), "--last", "1", "--out", str(tmp_path / "avg")], capsys)
    assert rc == 0, err
    assert (tmp_path / "avg" / "model.safetensors").is_file()


def test_generate_streams_text_from_an_lm_run(lm_run, capsys):
    # 40 new characters from a model whose context is 16 tokens: generation slides its window
    rc, out, err = run_cli(["generate", str(lm_run), "--prompt", "to be", "--max-new-tokens", "40"], capsys)
    assert rc == 0, err
    # without the sliding window at most 16 tokens would come out (special tokens print as nothing)
    assert out.startswith("to be") and len(out[:-1]) > 16


def test_attention_of_a_language_model(lm_run, capsys, tmp_path):
    rc, out, err = run_cli(["attention", str(lm_run), "--text", "to be or", "--out", str(tmp_path)], capsys)
    assert rc == 0, err
    assert (tmp_path / "self_layer0.png").is_file()


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qkv ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_missing_config_file(capsys, tmp_path):
    rc, _, err = run_cli(["train", str(tmp_path / "nope.yaml")], capsys)
    assert_one_line_error(rc, err, "config file not found", "nope.yaml")


def test_unknown_config_key_lists_valid_keys(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: translation\ntrain: {stepz: 3}\n", encoding="utf-8")
    rc, _, err = run_cli(["train", str(cfg)], capsys)
    assert_one_line_error(rc, err, "unknown key train.stepz", "steps", "lr", "warmup")


def test_wrong_type_in_override(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: translation\n", encoding="utf-8")
    rc, _, err = run_cli(["train", str(cfg), "--set", "train.steps=lots"], capsys)
    assert_one_line_error(rc, err, "train.steps must be int", "lots")


def test_checkpoint_of_another_task(lm_run, capsys, monkeypatch):
    rc, _, err = run_cli(["translate", str(lm_run)], capsys, "hello\n", monkeypatch)
    assert_one_line_error(rc, err, "holds a lm model, not a translation model")


def test_empty_input(demo_run, capsys, monkeypatch):
    rc, _, err = run_cli(["translate", str(demo_run)], capsys, "", monkeypatch)
    assert_one_line_error(rc, err, "no input")


def test_blank_lines_get_blank_answers(demo_run, capsys, monkeypatch):
    rc, out, err = run_cli(["translate", str(demo_run)], capsys, "\n  \n", monkeypatch)
    assert rc == 0 and out == "\n\n", err


def test_missing_run_directory(capsys, tmp_path, monkeypatch):
    rc, _, err = run_cli(["translate", str(tmp_path / "none")], capsys, "x\n", monkeypatch)
    assert_one_line_error(rc, err, "no qkv checkpoint")


def test_help_for_every_command(capsys):
    from qkv.cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo", "train", "translate", "generate", "classify", "embed", "evaluate", "attention", "average",
            "bench"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: qkv " + name in capsys.readouterr().out


def test_metrics_file_is_jsonl(demo_run):
    rows = [json.loads(line) for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("step" in r for r in rows)
