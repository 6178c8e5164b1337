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
from typing import TYPE_CHECKING, Any

import numpy as np

from qkv.viz._common import check_tokens, display_token, new_figure, to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    """
    image = ax.imshow(matrix, cmap=cmap, vmin=min(0.0, float(matrix.min())), vmax=vmax, aspect="auto")
    label_kw = {"parse_math": False, "fontsize": 8 if max(matrix.shape) > 30 else 10}
    ax.set_xticks(range(matrix.shape[1]), [display_token(t) for t in key_tokens], rotation=90, **label_kw)
    if show_query_labels:
        ax.set_yticks(range(matrix.shape[0]), [display_token(t) for t in query_tokens], **label_kw)
    else:
        ax.set_yticks(range(matrix.shape[0]), [""] * matrix.shape[0])
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
        figsize: inches; default grows with the number of tokens.
        cmap: colormap name.

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
    if figsize is None:
        figsize = (min(16.0, 2.0 + 0.28 * S), min(16.0, 1.5 + 0.28 * L))
    fig = new_figure(figsize)
    ax = fig.add_subplot()
    image = draw_attention(ax, matrix, query_tokens, key_tokens, cmap=cmap)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
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
) -> Figure:
    """One heatmap panel per head of a layer, on a shared colour scale.

    For a translator, pass the last decoder layer's cross-attention ``(B, H, L, S)`` with the output
    tokens as ``query_tokens`` and the source tokens as ``key_tokens``.

    Args:
        weights: ``(H, L, S)`` or ``(B, H, L, S)`` tensor or array.
        query_tokens: ``L`` row labels.
        key_tokens: ``S`` column labels.
        batch_index: which example of a 4-D batch.
        ncols: panels per row (default ``min(H, 4)``).
        title: figure title.
        xlabel: x-axis label of the bottom row.
        ylabel: y-axis label of the first column.
        panel_size: inches per panel side; default grows with the number of tokens.
        cmap: colormap name.

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
    ncols = min(H, 4) if ncols is None else max(1, min(ncols, H))
    nrows = math.ceil(H / ncols)
    size = panel_size or min(6.0, 1.2 + 0.2 * max(L, S))
    fig = new_figure((ncols * size + 1.0, nrows * size + (0.5 if title else 0.0)))
    vmax = float(array.max())
    image = None
    for h in range(H):
        ax = fig.add_subplot(nrows, ncols, h + 1)
        image = draw_attention(
            ax, array[h], query_tokens, key_tokens, vmax=vmax, cmap=cmap, show_query_labels=h % ncols == 0
        )
        ax.set_title(f"head {h}", fontsize=10)
        if h % ncols == 0:
            ax.set_ylabel(ylabel)
        if h >= H - ncols:
            ax.set_xlabel(xlabel)
    fig.colorbar(image, ax=fig.axes, shrink=0.6)
    if title:  # wrapped to the figure's width (about 11 characters per inch at the default font size)
        width = fig.get_size_inches()[0]
        fig.suptitle(textwrap.fill(title, width=max(20, int(width * 11))))
    return fig


def _batch(array: np.ndarray, batch_index: int) -> int:
    if not 0 <= batch_index < array.shape[0]:
        raise ValueError(f"batch_index {batch_index} out of range for weights of shape {array.shape}")
    return batch_index
