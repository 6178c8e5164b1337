"""Training curves from metric records or a metrics.jsonl file, in the layout qkv.training writes."""

import json

import matplotlib.image as mpimg
import pytest

from qkv.training.metrics import MetricsWriter
from qkv.viz import read_metrics_jsonl, save_figure, training_curves


def write_run(folder):
    writer = MetricsWriter(folder, tensorboard=False)
    for step in range(0, 50, 10):
        writer.write("train", step, {"loss": 3.0 / (step + 1), "lr": 1e-3, "tokens_per_s": 900.0})
        if step % 20 == 0:
            writer.write("eval", step, {"loss": 3.5 / (step + 1), "ppl": 2.0, "exact_match": step / 50})
    writer.close()
    return folder / "metrics.jsonl"


def legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_curves_from_a_training_run_file(tmp_path):
    path = write_run(tmp_path)
    fig = training_curves(path, title="run")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "lr", "ppl", "exact_match"]  # loss first; counters and speeds left out
    loss = fig.axes[0]
    assert legend(loss) == ["train loss", "eval loss"]
    assert list(loss.lines[0].get_xdata()) == [0, 10, 20, 30, 40]
    assert list(loss.lines[1].get_ydata()) == pytest.approx([3.5, 3.5 / 21, 3.5 / 41])
    assert loss.get_xlabel() == "step"
    image = mpimg.imread(save_figure(fig, tmp_path / "curves.png", dpi=50))
    assert image.shape[:2] == (2 * 160, 2 * 250)  # two rows, two columns of 5 x 3.2 inch panels


def test_flat_records_and_metric_selection():
    records = [{"step": s, "train_loss": 1.0 / (s + 1), "val_loss": 2.0 / (s + 1), "accuracy": 0.5} for s in range(3)]
    fig = training_curves(records, metrics=["loss"])
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    assert legend(fig.axes[0]) == ["train_loss", "val_loss"]
    fig = training_curves(records, x="step", metrics=["accuracy"], log_loss=True)
    assert [ax.get_title() for ax in fig.axes] == ["accuracy"]
    with pytest.raises(ValueError, match=r"nothing to plot.*\['bleu'\].*keys seen: \['accuracy', 'step'"):
        training_curves(records, metrics=["bleu"])
    with pytest.raises(ValueError, match="nothing to plot"):
        training_curves([{"loss": 1.0}])  # no step


def test_jsonl_skips_a_half_written_last_line_but_not_a_broken_middle(tmp_path):
    good = [{"split": "train", "step": 1, "loss": 2.0}, {"split": "train", "step": 2, "loss": 1.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in good) + '\n\n{"split": "tr')
    assert read_metrics_jsonl(path) == good
    path.write_text(json.dumps(good[0]) + "\nnot json\n" + json.dumps(good[1]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
        read_metrics_jsonl(path)
    path.write_text("[1, 2]\n{}\n")
    with pytest.raises(ValueError, match=r":1: expected a JSON object, got list"):
        read_metrics_jsonl(path)
    with pytest.raises(FileNotFoundError):
        training_curves(tmp_path / "missing.jsonl")
