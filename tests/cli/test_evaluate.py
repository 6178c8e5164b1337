"""qkv evaluate RUN alone scores the run's own test split; --output keeps the hypotheses; --by-length buckets
come from quantiles of the data."""

from __future__ import annotations

from qkv.cli import main
from qkv.cli.evaluate import quantile_edges
from qkv.data import synthetic


def test_translation_run_on_its_own_test_split_keeps_hypotheses(dates_run, tmp_path, capsys):
    hyps = tmp_path / "test.hyp"
    assert main(["evaluate", str(dates_run), "--output", str(hyps), "--by-length", "--buckets", "3"]) == 0
    out, err = capsys.readouterr()
    assert "the run's test split: the recipe's 24 generated dates test pairs (seed 0)" in err
    assert "(24 sentences)" in out and "BLEU" in out
    assert len(hyps.read_text(encoding="utf-8").splitlines()) == 24
    sources = [s for s, _ in synthetic.date_splits(200, 16, 24, seed=0)["test"]]
    edges = quantile_edges([len(s.split()) for s in sources], 3)
    rows = out[out.index("---------"):].splitlines()[1:]
    assert [r.split()[0] for r in rows] == [f"0-{edges[0]}", *(f"{a + 1}-{b}" for a, b in zip(edges[:-1], edges[1:], strict=True)),
                                           f"{edges[-1] + 1}+"]
    assert all(int(r.split()[1]) > 0 for r in rows)  # buckets from the data: none empty


def test_quantile_edges_split_the_data_evenly():
    lengths = list(range(1, 101))
    assert quantile_edges(lengths, 4) == [26, 51, 76]
    assert quantile_edges([5] * 50, 4) == [5]  # one length: one bucket edge
    assert quantile_edges([1, 2, 3], 1) == [3]


def test_lm_run_on_its_held_out_text(lm_run_dir, capsys):
    assert main(["evaluate", str(lm_run_dir)]) == 0
    out, err = capsys.readouterr()
    assert "held-out text: the last 10% of data.train" in err and "perplexity" in out


def test_classifier_on_its_test_split(labelled_run, capsys):
    assert main(["evaluate", str(labelled_run)]) == 0
    out, err = capsys.readouterr()
    assert "test split: data.test" in err and "(32 examples)" in out


def test_src_without_ref_is_an_error(dates_run, tmp_path, capsys):
    (tmp_path / "s.txt").write_text("x\n", encoding="utf-8")
    assert main(["evaluate", str(dates_run), "--src", str(tmp_path / "s.txt")]) == 2
    assert "give both --src and --ref" in capsys.readouterr().err
