"""Attention heatmaps: one matrix, or one panel per head of a layer, labelled with the tokens.

Notation: B batch, H heads, L query length (rows), S key length (columns).

Weights come in the SDPA layout ``(B, H, L, S)`` as models return them (or ``(L, S)``, ``(H, L, S)``);
rows are query tokens (e.g. output characters), columns are key tokens (e.g. source characters).
matplotlib is imported lazily and used without pyplot, on an Agg canvas.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from qkv.viz._common import check_tokens, display_token, new_figure, to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# Label layout, in inches (matplotlib's unit) at the tick label font size FONT_SIZE (points): one label
# needs PITCH along its axis (its text is about 0.14 in high), so cells are at least PITCH wide while every
# token is labelled; past MAX_SIDE inches per axis the cells shrink and every k-th token is labelled.
FONT_SIZE = 9
PITCH = 0.2
SMALL_SIDE = 3.0  # a short input gets cells of up to MAX_CELL so that its axis is about this long
MAX_CELL = 0.4
MAX_SIDE = 30.0  # longest heatmap axis of attention_heatmap
MAX_FIGURE = 40.0  # longest side of an attention_heads_grid figure
MIN_FIGURE = (3.0, 2.5)  # attention_heatmap of one or two tokens
ASPECT = 1.6  # width / height that attention_heads_grid aims at when it chooses the number of columns
CHAR_WIDTH = 0.075  # a generous average character width at FONT_SIZE
MAX_CHARS = 20  # longer labels end with an ellipsis


def label_layout(n: int, max_inches: float) -> tuple[float, int]:
    """Cell size and label stride for ``n`` tokens along an axis of at most ``max_inches``.

    Args:
        n: number of tokens (cells) along the axis.
        max_inches: the longest the axis may be.

    Returns:
        ``(cell, step)``: cell size in inches and ``step``, the stride of labelled tokens (1 = all of them).
        Labels are ``cell * step >= PITCH`` apart, so they never overlap.
    """
    if n * PITCH <= max_inches:
        return max(PITCH, min(MAX_CELL, SMALL_SIDE / n)), 1
    step = math.ceil(n * PITCH / max_inches)
    return max_inches / n, step


def _fit(L: int, S: int, max_width: float, max_height: float) -> tuple[float, int, float, int]:
    """``(cell_x, step_x, cell_y, step_y)``; square cells when every token is labelled on both axes."""
    cx, sx = label_layout(S, max_width)
    cy, sy = label_layout(L, max_height)
    if sx == sy == 1:
        cx = cy = min(cx, cy)
    return cx, sx, cy, sy


def _stride_for(n: int, inches: float) -> int:
    """Label stride that keeps labels PITCH apart on an axis of a given (user-chosen) length."""
    return max(1, math.ceil(n * PITCH / max(inches, PITCH)))


def _label(token: str) -> str:
    shown = display_token(token)
    return shown if len(shown) <= MAX_CHARS else shown[: MAX_CHARS - 1] + "\u2026"


def _label_inches(tokens: Sequence[str]) -> float:
    """Room for the longest label plus the axis title beside it."""
    return 0.5 + CHAR_WIDTH * max(len(_label(t)) for t in tokens)


def _select_head(array: np.ndarray, batch_index: int, head: int | None) -> np.ndarray:
    """``(L, S)`` from ``(L, S)``, ``(H, L, S)`` or ``(B, H, L, S)``; ``head=None`` averages the heads."""
    if array.ndim == 4:
        array = array[_batch(array, batch_index)]  # (H, L, S)
    if array.ndim == 3:
        if head is None:
            return array.mean(axis=0)  # (L, S)
        if not 0 <= head < array.shape[0]:
            raise ValueError(f"head {head} out of range for weights with H={array.shape[0]} heads")
        return array[head]  # (L, S)
    return array


def draw_attention(
    ax: Axes,
    matrix: np.ndarray,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    *,
    vmax: float | None = None,
    cmap: str = "viridis",
    show_query_labels: bool = True,
    steps: tuple[int, int] = (1, 1),
) -> Any:
    """Draws one ``(L, S)`` matrix on ``ax`` with token tick labels; returns the image artist.

    Args:
        ax: matplotlib axes.
        matrix: ``(L, S)`` weights, already checked.
        query_tokens: ``L`` row labels.
        key_tokens: ``S`` column labels.
        vmax: top of the colour scale (default: the matrix maximum).
        cmap: colormap name.
        show_query_labels: label the rows (off for inner panels of a grid).
        steps: ``(rows, columns)`` label strides: every ``k``-th token is labelled (1 = all).
    """
    image = ax.imshow(matrix, cmap=cmap, vmin=min(0.0, float(matrix.min())), vmax=vmax, aspect="auto")
    row_step, col_step = steps
    label_kw = {"parse_math": False, "fontsize": FONT_SIZE}
    cols = range(0, matrix.shape[1], col_step)
    ax.set_xticks(cols, [_label(key_tokens[j]) for j in cols], rotation=90, **label_kw)
    rows = range(0, matrix.shape[0], row_step)
    ax.set_yticks(rows, [_label(query_tokens[i]) if show_query_labels else "" for i in rows], **label_kw)
    ax.tick_params(length=0)
    return image


def attention_heatmap(
    weights: Any,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    *,
    batch_index: int = 0,
    head: int | None = 0,
    title: str | None = None,
    xlabel: str = "keys",
    ylabel: str = "queries",
    figsize: tuple[float, float] | None = None,
    cmap: str = "viridis",
    vmax: float | None = 1.0,
) -> Figure:
    """Heatmap of one attention matrix: query tokens down the side, key tokens along the bottom.

    Args:
        weights: ``(L, S)``, ``(H, L, S)`` or ``(B, H, L, S)`` tensor or array.
        query_tokens: ``L`` labels (a string counts as one label per character).
        key_tokens: ``S`` labels.
        batch_index: which example of a 4-D batch.
        head: which head of a 3-D/4-D input, or ``None`` for the mean over heads.
        title: axes title.
        xlabel: x-axis label (e.g. ``"source"``).
        ylabel: y-axis label (e.g. ``"output"``).
        figsize: inches; by default the cells are big enough for every token's label, up to
            ``MAX_SIDE`` inches per axis (then every k-th token is labelled).
        cmap: colormap name.
        vmax: top of the colour scale. ``1.0`` (default) shows weights as the probabilities they are, so a
            near-uniform head stays dark and only a sharp alignment is bright (as in the HTML explorer);
            ``None`` stretches the scale to the largest weight shown.

    Returns:
        The figure (save it with :func:`qkv.viz.save_figure`).

    Raises:
        ValueError: on wrongly shaped or non-finite weights, or a label count that does not match.
    """
    array = to_numpy(weights, "weights", ndims=(2, 3, 4))
    matrix = _select_head(array, batch_index, head)
    L, S = matrix.shape
    query_tokens = check_tokens(query_tokens, L, "query_tokens", "L", array.shape)
    key_tokens = check_tokens(key_tokens, S, "key_tokens", "S", array.shape)
    left, bottom = _label_inches(query_tokens), _label_inches(key_tokens)
    right, top = 1.0, 0.5 if title else 0.2  # colorbar; title
    if figsize is None:
        cx, sx, cy, sy = _fit(L, S, MAX_SIDE, MAX_SIDE)
        figsize = (max(MIN_FIGURE[0], left + S * cx + right), max(MIN_FIGURE[1], top + L * cy + bottom))
    else:
        sx, sy = _stride_for(S, figsize[0] - left - right), _stride_for(L, figsize[1] - top - bottom)
    fig = new_figure(figsize)
    ax = fig.add_subplot()
    image = draw_attention(ax, matrix, query_tokens, key_tokens, vmax=vmax, cmap=cmap, steps=(sy, sx))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _colorbar(fig, image, ax, shrink=0.8)
    return fig


def attention_heads_grid(
    weights: Any,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    *,
    batch_index: int = 0,
    ncols: int | None = None,
    title: str | None = None,
    xlabel: str = "keys",
    ylabel: str = "queries",
    panel_size: float | None = None,
    cmap: str = "viridis",
    vmax: float | None = 1.0,
) -> Figure:
    """One heatmap panel per head of a layer, on one colour scale.

    For a translator, pass the last decoder layer's cross-attention ``(B, H, L, S)`` with the output
    tokens as ``query_tokens`` and the source tokens as ``key_tokens``.

    Args:
        weights: ``(H, L, S)`` or ``(B, H, L, S)`` tensor or array.
        query_tokens: ``L`` row labels.
        key_tokens: ``S`` column labels.
        batch_index: which example of a 4-D batch.
        ncols: panels per row (default: the count whose figure is closest to ``ASPECT``).
        title: figure title.
        xlabel: x-axis label of the bottom row.
        ylabel: y-axis label of the first column.
        panel_size: inches per panel side; by default the cells are big enough for every token's label,
            the whole figure up to ``MAX_FIGURE`` inches per side (then every k-th token is labelled).
        cmap: colormap name.
        vmax: top of the colour scale. ``1.0`` (default) shows weights as the probabilities they are, so a
            near-uniform head stays dark and only a sharp alignment is bright (as in the HTML explorer);
            ``None`` stretches the scale to the largest weight of any head.

    Returns:
        The figure; ``fig.axes[h]`` is head ``h`` (then the colorbar).

    Raises:
        ValueError: on wrongly shaped or non-finite weights, or a label count that does not match.
    """
    array = to_numpy(weights, "weights", ndims=(3, 4))
    if array.ndim == 4:
        array = array[_batch(array, batch_index)]  # (H, L, S)
    H, L, S = array.shape
    query_tokens = check_tokens(query_tokens, L, "query_tokens", "L", array.shape)
    key_tokens = check_tokens(key_tokens, S, "key_tokens", "S", array.shape)
    margins = (_label_inches(query_tokens), _label_inches(key_tokens), 0.5 if title else 0.0)
    choices = range(1, H + 1) if ncols is None else [max(1, min(ncols, H))]
    layouts = [_grid_layout(H, L, S, c, margins, panel_size) for c in choices]
    ncols, figsize, steps, _ = min(layouts, key=lambda g: _grid_score(H, g))
    nrows = math.ceil(H / ncols)
    fig = new_figure(figsize)
    vmax = float(array.max()) if vmax is None else vmax
    image = None
    for h in range(H):
        ax = fig.add_subplot(nrows, ncols, h + 1)
        image = draw_attention(
            ax, array[h], query_tokens, key_tokens, vmax=vmax, cmap=cmap, show_query_labels=h % ncols == 0,
            steps=steps,
        )
        ax.set_title(f"head {h}", fontsize=10)
        if h % ncols == 0:
            ax.set_ylabel(ylabel)
        if h >= H - ncols:
            ax.set_xlabel(xlabel)
    _colorbar(fig, image, fig.axes, shrink=0.6)
    if title:  # wrapped to the figure's width (about 11 characters per inch at the default font size)
        width = fig.get_size_inches()[0]
        fig.suptitle(textwrap.fill(title, width=max(20, int(width * 11))))
    return fig


class _Grid(NamedTuple):
    ncols: int
    figsize: tuple[float, float]
    steps: tuple[int, int]  # label strides (rows, columns)
    distortion: float  # |log(cell width / cell height)|: 0 for square cells


def _grid_layout(
    H: int, L: int, S: int, ncols: int, margins: tuple[float, float, float], panel_size: float | None
) -> _Grid:
    """The layout of a grid of ``H`` panels, ``ncols`` per row.

    ``margins`` are the inches for the row labels (left), the column labels (below each panel) and the title.
    """
    left, bottom, top = margins
    nrows = math.ceil(H / ncols)
    title_h, gap, colorbar = 0.3, 0.25, 1.0  # panel titles, space between panels, colorbar
    if panel_size is None:
        width = max(1.0, (MAX_FIGURE - left - colorbar) / ncols - gap)
        height = max(1.0, (MAX_FIGURE - top) / nrows - bottom - title_h)
        cx, sx, cy, sy = _fit(L, S, width, height)
        panel_w, panel_h = S * cx, L * cy
    else:
        panel_w = panel_h = panel_size
        sx, sy = _stride_for(S, panel_size), _stride_for(L, panel_size)
    figsize = (left + ncols * (panel_w + gap) + colorbar, top + nrows * (panel_h + bottom + title_h))
    return _Grid(ncols, figsize, (sy, sx), abs(math.log(panel_w / S * L / panel_h)))


def _colorbar(fig: Figure, image: Any, ax: Any, *, shrink: float) -> None:
    """A colorbar about 0.2 in wide whatever the figure's size (matplotlib's default grows with it)."""
    width, height = fig.get_size_inches()
    fig.colorbar(image, ax=ax, shrink=shrink, fraction=min(0.15, 0.4 / width), aspect=max(20.0, shrink * height / 0.2))


def _grid_score(H: int, grid: _Grid) -> float:
    """Lower is better: the figure's distance from ``ASPECT``, stretched cells, and empty slots."""
    empty = -H % grid.ncols
    shape = abs(math.log(grid.figsize[0] / grid.figsize[1] / ASPECT))
    return shape + grid.distortion + (0.5 if empty else 0.0)


def _batch(array: np.ndarray, batch_index: int) -> int:
    if not 0 <= batch_index < array.shape[0]:
        raise ValueError(f"batch_index {batch_index} out of range for weights of shape {array.shape}")
    return batch_index
