"""Attention heatmaps and per-head grids: labels on the axes, the right matrices, real PNGs, clear errors."""

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from qkv.viz import attention_heads_grid, attention_heatmap, display_token, save_figure

QUERIES = ["J", "a", "n", " ", "$x$"]
KEYS = list("2020-01")


def weights(B=2, H=3):
    return torch.softmax(torch.randn(B, H, len(QUERIES), len(KEYS)), dim=-1)


def tick_texts(labels):
    return [t.get_text() for t in labels]


def test_heatmap_labels_and_matrix():
    w = weights()
    fig = attention_heatmap(w, QUERIES, KEYS, batch_index=1, head=2, title="cross", xlabel="source", ylabel="output")
    ax = fig.axes[0]
    assert tick_texts(ax.get_xticklabels()) == KEYS
    assert tick_texts(ax.get_yticklabels()) == ["J", "a", "n", "\u2423", "$x$"]  # space shown, no mathtext
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("source", "output", "cross")
    np.testing.assert_allclose(ax.images[0].get_array(), w[1, 2].double().numpy())
    mean = attention_heatmap(w, QUERIES, KEYS, head=None).axes[0].images[0].get_array()
    np.testing.assert_allclose(mean, w[0].double().mean(0).numpy(), rtol=1e-12)
    two_d = attention_heatmap(w[0, 0].numpy(), "Jan x", KEYS).axes[0]  # (L, S) array; a string = characters
    assert tick_texts(two_d.get_yticklabels()) == ["J", "a", "n", "\u2423", "x"]


def test_near_uniform_attention_stays_dark_unless_asked_to_stretch():
    near_uniform = torch.softmax(torch.randn(len(QUERIES), len(KEYS)) * 0.01, dim=-1)  # ~1/7 everywhere
    absolute = attention_heatmap(near_uniform, QUERIES, KEYS).axes[0].images[0]
    assert absolute.get_clim() == (0.0, 1.0)
    assert absolute.to_rgba(near_uniform.max().item())[1] < 0.3  # dark, far from the bright top of the scale
    stretched = attention_heatmap(near_uniform, QUERIES, KEYS, vmax=None).axes[0].images[0]
    assert stretched.get_clim()[1] == pytest.approx(near_uniform.max().item())


def test_heatmap_png_has_the_expected_size(tmp_path):
    fig = attention_heatmap(weights(), QUERIES, KEYS, figsize=(4, 3))
    path = save_figure(fig, tmp_path / "deep" / "heatmap.png", dpi=50)
    image = mpimg.imread(path)
    assert image.shape == (150, 200, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == ["heatmap.png"]


def test_save_figure_is_atomic_on_failure(tmp_path):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old")

    class Broken:
        def savefig(self, f, **_):
            f.write(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(Broken(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_grid_one_panel_per_head_with_shared_scale(tmp_path):
    w = weights(B=2, H=5)
    fig = attention_heads_grid(w, QUERIES, KEYS, batch_index=1, ncols=3, title="last layer", xlabel="source")
    heads = fig.axes[:5]
    assert len(fig.axes) == 6  # five heads and a colorbar
    assert [ax.get_title() for ax in heads] == [f"head {h}" for h in range(5)]
    for h, ax in enumerate(heads):
        np.testing.assert_allclose(ax.images[0].get_array(), w[1, h].double().numpy())
        assert tick_texts(ax.get_xticklabels()) == KEYS
        expected_rows = ["J", "a", "n", "\u2423", "$x$"] if h % 3 == 0 else [""] * 5
        assert tick_texts(ax.get_yticklabels()) == expected_rows
    assert len({ax.images[0].get_clim() for ax in heads}) == 1
    assert heads[0].images[0].get_clim() == (0.0, 1.0)  # weights are probabilities: absolute scale
    stretched = attention_heads_grid(w, QUERIES, KEYS, batch_index=1, vmax=None).axes[0]
    assert stretched.images[0].get_clim()[1] == pytest.approx(float(w[1].max()))
    assert [ax.get_xlabel() for ax in heads] == ["", "", "source", "source", "source"]
    image = mpimg.imread(save_figure(fig, tmp_path / "grid.png", dpi=40))
    width, height = fig.get_size_inches() * 40
    assert image.shape[:2] == (round(height), round(width))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: attention_heatmap(torch.rand(3), QUERIES, KEYS), r"weights must have shape .* got \(3,\)"),
        (lambda: attention_heatmap(torch.rand(1, 1, 1, 5, 7), QUERIES, KEYS), r"got \(1, 1, 1, 5, 7\)"),
        (lambda: attention_heatmap(torch.rand(0, 7), [], KEYS), r"no empty dimension, got \(0, 7\)"),
        (lambda: attention_heads_grid(torch.rand(5, 7), QUERIES, KEYS), r"\(H, L, S\) or \(B, H, L, S\).* got \(5, 7\)"),
        (
            lambda: attention_heatmap(torch.tensor([[0.5, float("inf")]]), ["q"], ["a", "b"]),
            r"weights of shape \(1, 2\) has 1 non-finite values, e.g. inf at \(0, 1\)",
        ),
        (lambda: attention_heatmap(torch.rand(5, 7), QUERIES[:2], KEYS), r"query_tokens has 2 labels but weights of shape \(5, 7\) have L=5"),
        (lambda: attention_heads_grid(torch.rand(2, 5, 7), QUERIES, KEYS[:3]), r"key_tokens has 3 labels .* S=7"),
        (lambda: attention_heatmap(torch.rand(5, 7), [1, 2, 3, 4, 5], KEYS), r"query_tokens\[0\] must be a str, got int 1"),
        (lambda: attention_heatmap(torch.rand(2, 3, 5, 7), QUERIES, KEYS, head=3), "head 3 out of range .* H=3"),
        (lambda: attention_heads_grid(torch.rand(2, 3, 5, 7), QUERIES, KEYS, batch_index=2), r"batch_index 2 out of range .* \(2, 3, 5, 7\)"),
    ],
)
def test_bad_input_raises_naming_argument_and_shape(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_display_token():
    assert [display_token(t) for t in [" ", "a b", "\n", "\t", ""]] == ["\u2423", "a\u2423b", "\u23ce", "\u21e5", "\u2205"]


def label_boxes(fig):
    """Per axis of each heatmap panel: the drawn tick labels' boxes in pixels, from the renderer."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:-1]:  # the last axes is the colorbar
        for labels, along in ((ax.get_xticklabels(), "x"), (ax.get_yticklabels(), "y")):
            yield along, [t.get_window_extent(renderer) for t in labels if t.get_text()]


def assert_labels_readable(fig):
    """No two tick labels overlap along their axis and every label lies inside the figure."""
    width, height = fig.canvas.get_width_height()
    for along, boxes in label_boxes(fig):
        boxes.sort(key=lambda b: b.x0 if along == "x" else b.y0)
        for a, b in zip(boxes, boxes[1:], strict=False):
            gap = b.x0 - a.x1 if along == "x" else b.y0 - a.y1
            assert gap > 0, f"{along} labels overlap by {-gap:.1f} px"
        for box in boxes:
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, f"{box} outside {width}x{height}"


def tokens(n):
    return [f"w{i}" for i in range(n)]


@pytest.mark.parametrize("n", [60, 200])
def test_heatmap_grows_with_tokens_and_labels_never_overlap(n):
    from qkv.viz.heatmap import MAX_SIDE, PITCH

    fig = attention_heatmap(torch.softmax(torch.randn(n, n), -1), tokens(n), tokens(n))
    assert_labels_readable(fig)
    shown = tick_texts(fig.axes[0].get_xticklabels())
    if n * PITCH <= MAX_SIDE:  # readable: every token labelled, the figure as big as that needs
        assert shown == tokens(n) and tick_texts(fig.axes[0].get_yticklabels()) == tokens(n)
        assert fig.get_size_inches()[0] >= n * PITCH
    else:  # past the readable limit: every k-th token, the figure at its largest
        step = int(shown[1][1:])
        assert step > 1 and shown == tokens(n)[::step]
        assert max(fig.get_size_inches()) <= MAX_SIDE + 3


def test_heads_grid_grows_with_tokens_and_labels_never_overlap():
    n = 40
    fig = attention_heads_grid(torch.softmax(torch.randn(4, n, n), -1), tokens(n), tokens(n), title="t " * 200)
    assert_labels_readable(fig)
    for ax in fig.axes[:4]:
        assert tick_texts(ax.get_xticklabels()) == tokens(n)
    assert tick_texts(fig.axes[0].get_yticklabels()) == tokens(n)


def test_long_tokens_are_clipped_and_still_fit():
    long = ["x" * 60, "short", "y" * 30]
    fig = attention_heatmap(torch.rand(3, 3), long, long)
    assert_labels_readable(fig)
    texts = tick_texts(fig.axes[0].get_xticklabels())
    assert texts[1] == "short" and texts[0].endswith("\u2026") and len(texts[0]) <= 20


@pytest.mark.parametrize(("L", "S"), [(1, 1), (5, 7), (11, 26)])
def test_small_inputs_keep_a_reasonable_size(L, S):
    fig = attention_heatmap(torch.rand(L, S), tokens(L), tokens(S), title="small")
    width, height = fig.get_size_inches()
    assert 3 <= width <= 9 and 2.5 <= height <= 6, (width, height)
    assert_labels_readable(fig)
    grid = attention_heads_grid(torch.rand(4, L, S), tokens(L), tokens(S))
    width, height = grid.get_size_inches()
    assert 2.5 <= width <= 16 and 1.5 <= height <= 10, (width, height)
    assert_labels_readable(grid)


def test_given_figsize_labels_every_kth_token():
    fig = attention_heatmap(torch.rand(100, 100), tokens(100), tokens(100), figsize=(6, 6))
    assert_labels_readable(fig)
    assert 1 < len(fig.axes[0].get_xticklabels()) < 100


def test_saved_files_get_ordinary_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = save_figure(attention_heatmap(torch.rand(2, 2), "ab", "cd"), tmp_path / "a.png", dpi=20)
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any new file (not mkstemp's 0o600)
