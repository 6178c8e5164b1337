"""What qkv train says while it runs, and how long jobs report progress and what they wrote."""

from __future__ import annotations

import io
import shlex
import sys

from qkv.cli import main
from qkv.cli.progress import bar, in_chunks
from qkv.recipes.feedback import ending
from qkv.training import TrainResult
from qkv.training.progress import metrics_line, projected_end


def test_training_prints_a_header_evaluation_and_log_lines(dates_training):
    run, out = dates_training
    lines = out.splitlines()
    assert lines[0].startswith("translation: transformer-tiny (Seq2SeqConfig), ") and "parameters" in lines[0]
    assert lines[1].startswith("data: 200 train, 16 valid, 24 test sentence pairs (dates); vocabulary ")
    assert lines[2].startswith("device: cpu") and "precision" in lines[2] and "train.precision: auto" in lines[2]
    assert lines[3] == "budget: 10 steps; evaluation every 5 steps and at the end"
    assert lines[4] == f"run directory: {run}"
    assert "step 5: loss " in out and "tokens/s" in out  # the bar is off: log_every prints
    assert "step 5: val loss " in out and "step 10: val loss " in out and "bleu " in out
    assert f"next: qkv translate {run}" in out


def test_time_limit_stop_names_checkpoint_and_resume_command(dates_recipe, tmp_path, capsys):
    out_dir = tmp_path / "limited"
    sets = ["--set", "train.time_limit=0.001", "--set", f"out_dir={out_dir}", "--set", "train.eval_every=0"]
    assert main(["train", str(dates_recipe), *sets]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("stopped by the time limit"))
    assert "(0.001 s) at step 1;" in line and f"checkpoint {out_dir / 'step_00000001'}" in line
    command = shlex.split(line.split("continue with: ")[1])
    assert command[:3] == ["qkv", "train", str(dates_recipe)] and command[-1] == "--resume"
    assert main(command[1:]) == 0  # the printed command works
    assert "resuming from step 1 " in capsys.readouterr().out


def test_ending_lines():
    assert ending(TrainResult(step=10), 60.0, "qkv train c.yaml --resume") is None
    early = ending(TrainResult(step=40, stopped_early=True, last_path="runs/x/step_40"), None, "")
    assert early.startswith("stopped early at step 40") and "runs/x/step_40" in early


def test_bar_length_follows_the_time_limit():
    # 10 updates in 5 s, 10 s left: 20 more fit, not the 1000 planned
    assert projected_end(10, 1000, started=(0, 100.0), now=105.0, deadline=115.0) == 30
    assert projected_end(10, 25, started=(0, 100.0), now=105.0, deadline=115.0) == 25
    assert projected_end(10, 1000, started=(0, 100.0), now=105.0, deadline=None) == 1000
    assert projected_end(10, 1000, started=(0, 100.0), now=120.0, deadline=115.0) == 10


def test_metrics_line():
    assert metrics_line(250, {"loss": 0.5, "ppl": 1.6487, "tokens": 99.0, "bleu": 97.1234}) == \
        "step 250: val loss 0.5000, ppl 1.6487, bleu 97.1234"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    assert in_chunks(lambda part: [s.upper() for s in part], ["a"] * 600, "line") == ["A"] * 600
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with bar(3, "line") as update:
        update(3)
    assert "0/3 [" in terminal.getvalue()  # the bar is drawn (and cleared at the end: leave=False)


def test_batch_jobs_say_what_they_wrote(dates_run, tmp_path, capsys):
    src = tmp_path / "src.txt"
    src.write_text("3 mars 2019\n\nMarch 3rd, 2019\n", encoding="utf-8")
    assert main(["translate", str(dates_run), "--input", str(src), "--output", str(tmp_path / "out.txt")]) == 0
    err = capsys.readouterr().err
    assert f"qkv translate: wrote 3 lines (one per input line) to {tmp_path / 'out.txt'}" in err


def test_batch_split_in_the_header_and_its_refusal_with_dropout(dates_recipe, tmp_path, capsys):
    sets = ["--set", f"out_dir={tmp_path / 'split'}", "--set", "train.batch_split=2", "--set", "train.eval_every=0"]
    assert main(["train", str(dates_recipe), *sets, "--set", "model_options.dropout=0.0"]) == 0
    header = capsys.readouterr().out.splitlines()[2]
    assert header.endswith("; batches split over 2 threads (train.batch_split: 2)"), header
    sets[1] = f"out_dir={tmp_path / 'dropout'}"
    assert main(["train", str(dates_recipe), *sets, "--set", "model_options.dropout=0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_split=2: the training step draws random numbers (dropout)" in err[0], err
