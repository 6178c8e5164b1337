"""BLEU by source length: buckets partition the corpus; each bucket's BLEU is sacrebleu on that subset."""

import matplotlib.image as mpimg
import pytest
import sacrebleu

from qkv.evaluation import bleu_by_length, format_length_table, length_figure, plot_bleu_by_length, source_length

WORDS = "the a cat dog sat ran on under mat hill big small red blue".split()


def corpus(n=40):
    import random

    rng = random.Random(0)
    sources, hyps, refs = [], [], []
    for _ in range(n):
        k = rng.randint(1, 25)
        src = " ".join(rng.choice(WORDS) for _ in range(k))
        ref = " ".join(rng.choice(WORDS) for _ in range(max(1, k + rng.randint(-2, 2))))
        hyp = " ".join(w if rng.random() < 0.7 else rng.choice(WORDS) for w in ref.split())
        sources.append(src), hyps.append(hyp), refs.append(ref)
    return sources, hyps, refs


def test_buckets_partition_the_corpus_and_match_sacrebleu_on_each_subset():
    sources, hyps, refs = corpus()
    rows = bleu_by_length(sources, hyps, refs, edges=(5, 10, 20))
    assert [r.label for r in rows] == ["0-5", "6-10", "11-20", "21+"]
    seen = sorted(i for r in rows for i in r.indices)
    assert seen == list(range(len(sources)))  # every pair in exactly one bucket
    assert sum(r.count for r in rows) == len(sources)
    for r in rows:
        assert r.count == len(r.indices) > 0
        for i in r.indices:
            n = len(sources[i].split())
            assert r.low <= n and (r.high is None or n <= r.high)
        expected = sacrebleu.corpus_bleu([hyps[i] for i in r.indices], [[refs[i] for i in r.indices]]).score
        assert r.bleu == pytest.approx(expected, abs=1e-9)


def test_length_units_and_empty_buckets():
    sources = ["abcdef", "ab cd"]
    rows = bleu_by_length(sources, ["x y", "x y"], ["x y", "x z"], edges=(3,), unit="chars")
    assert [r.indices for r in rows] == [(), (0, 1)]
    assert rows[0].bleu is None and rows[0].count == 0
    by_tokens = bleu_by_length(sources, ["x y", "x y"], ["x y", "x z"], edges=(3,), unit=lambda s: len(s) // 2)
    assert [r.indices for r in by_tokens] == [(0, 1), ()]
    assert source_length("a  b c", "words") == 3
    with pytest.raises(ValueError, match="unit must be"):
        source_length("a", "bytes")


@pytest.mark.parametrize("edges", [(), (10, 10), (5, 3), (-1, 4)])
def test_bad_edges_raise_with_values(edges):
    with pytest.raises(ValueError, match="edges must be"):
        bleu_by_length(["a"], ["a"], ["a"], edges=edges)


def test_sources_must_line_up():
    with pytest.raises(ValueError, match="sources has 1 entries but hypotheses has 2"):
        bleu_by_length(["a"], ["a", "b"], ["a", "b"])


def test_table_lists_every_bucket_and_system():
    sources, hyps, refs = corpus()
    rnn = bleu_by_length(sources, hyps, refs, edges=(5, 10, 40))
    perfect = bleu_by_length(sources, refs, refs, edges=(5, 10, 40))
    table = format_length_table({"RNN": rnn, "Transformer": perfect}, unit_name="tokens")
    lines = table.splitlines()
    assert lines[0].split() == ["src", "tokens", "n", "RNN", "Transformer"]
    assert len(lines) == 2 + 4
    assert lines[2].split() == ["0-5", str(rnn[0].count), f"{rnn[0].bleu:.2f}", "100.00"]
    assert lines[-1].split() == ["41+", "0", "-", "-"]
    with pytest.raises(ValueError, match="same as the first"):
        format_length_table({"a": rnn, "b": bleu_by_length(sources, hyps, refs, edges=(3,))})


def test_plot_has_one_line_per_system_and_writes_a_png(tmp_path):
    sources, hyps, refs = corpus()
    systems = {name: bleu_by_length(sources, hyps, refs, edges=(5, 10, 40)) for name in ["RNN", "RNN+attention"]}
    systems["Transformer"] = bleu_by_length(sources, refs, refs, edges=(5, 10, 40))
    fig = length_figure(systems)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["RNN", "RNN+attention", "Transformer"]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["0-5", "6-10", "11-40", "41+"]
    assert list(ax.lines[2].get_ydata()) == pytest.approx([100.0, 100.0, 100.0])  # the empty 41+ bucket is left out
    path = plot_bleu_by_length(systems, tmp_path / "sub" / "by_length.png", dpi=50)
    image = mpimg.imread(path)
    assert image.shape[:2] == (200, 320)
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file


def test_plot_file_follows_the_umask(tmp_path):
    import os

    sources, hyps, refs = corpus()
    old = os.umask(0o022)
    try:
        path = plot_bleu_by_length(bleu_by_length(sources, hyps, refs, edges=(5, 10)), tmp_path / "p.png", dpi=30)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
