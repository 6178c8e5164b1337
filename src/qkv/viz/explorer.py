"""A self-contained, interactive attention explorer: one HTML file, no server, no network.

Notation: B batch, H heads, L query length, S key length.

The page shows, for a chosen attention (e.g. encoder self-attention, decoder cross-attention), layer and
head, the ``(L, S)`` weight matrix as a heatmap with a colour legend and, beside it, the query tokens and
key tokens joined by lines whose strength is the weight (in the spirit of bertviz's head view); or every
layer x head as small maps at once (bertviz's model view), a click opening one. It opens on the last layer.
Hovering a token shows where it attends (or what attends to it), hovering a cell shows its value, and a
click pins the selection until clicked again. Colours are absolute (weight 0..1) by default, so a
near-uniform head does not look as sharp as an alignment; each row's or the matrix's maximum are options.

Safety: the data sits in a ``<script type="application/json">`` block with ``<``, ``>``, ``&`` and the
JS line separators escaped as ``\\uXXXX`` (so no token can close the block), is read with
``JSON.parse``, and tokens reach the page only as text. A Content-Security-Policy forbids every
network request. The file is written atomically.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkv.viz._common import atomic_write, check_tokens, to_numpy
from qkv.viz._explorer_page import EXPLORER_BODY, EXPLORER_CSS, EXPLORER_JS
from qkv.viz._page import embed_json, html_document

__all__ = ["AttentionView", "attention_explorer_html", "embed_json", "write_attention_explorer"]


@dataclass
class AttentionView:
    """One kind of attention of a model for one input: its weights per layer and the tokens on each side.

    Attributes:
        name: shown in the page's picker, e.g. ``"decoder cross-attention"``.
        weights: one entry per layer, each ``(B, H, L, S)``, ``(H, L, S)`` or ``(L, S)`` (one head; e.g.
            the additive weights of an RNN decoder). Layers may have different head counts.
        query_tokens: ``L`` labels of the rows (a string counts as one label per character).
        key_tokens: ``S`` labels of the columns; ``None`` for self-attention (same as ``query_tokens``).
        layer_names: names of the layers (default ``"layer 0"``, ``"layer 1"``, ...).
    """

    name: str
    weights: Sequence[Any]
    query_tokens: Sequence[str]
    key_tokens: Sequence[str] | None = None
    layer_names: Sequence[str] | None = field(default=None)


def _view_data(view: AttentionView, batch_index: int, digits: int) -> dict[str, Any]:
    if not isinstance(view.weights, Sequence) or len(view.weights) == 0:
        raise ValueError(f"view {view.name!r}: weights must be a non-empty list with one entry per layer")
    names = list(view.layer_names) if view.layer_names is not None else [f"layer {i}" for i in range(len(view.weights))]
    if len(names) != len(view.weights):
        raise ValueError(f"view {view.name!r}: {len(names)} layer_names for {len(view.weights)} layers")
    layers, query, key = [], None, None
    for i, w in enumerate(view.weights):
        array = to_numpy(w, f"{view.name!r} weights[{i}]", ndims=(2, 3, 4))
        if array.ndim == 4:
            if not 0 <= batch_index < array.shape[0]:
                raise ValueError(f"batch_index {batch_index} out of range for weights[{i}] of shape {array.shape}")
            array = array[batch_index]  # (H, L, S)
        elif array.ndim == 2:
            array = array[None]  # (1, L, S)
        _, L, S = array.shape
        query = check_tokens(view.query_tokens, L, f"{view.name!r} query_tokens", "L", array.shape)
        keys = view.query_tokens if view.key_tokens is None else view.key_tokens
        key = check_tokens(keys, S, f"{view.name!r} key_tokens", "S", array.shape)
        layers.append({"name": str(names[i]), "heads": array.round(digits).tolist()})
    return {"name": view.name, "queryTokens": query, "keyTokens": key, "layers": layers}


def attention_explorer_html(
    views: AttentionView | Sequence[AttentionView],
    *,
    title: str = "qkv attention explorer",
    batch_index: int = 0,
    digits: int = 4,
) -> str:
    """Builds the explorer page as a string.

    Args:
        views: one or more :class:`AttentionView` (e.g. encoder self-attention, decoder self-attention
            and cross-attention of one translation).
        title: page title (HTML-escaped).
        batch_index: which example of 4-D ``(B, H, L, S)`` weights to show.
        digits: decimals kept per weight (the file size grows with them).

    Returns:
        The complete HTML document.

    Raises:
        ValueError: on wrongly shaped or non-finite weights, or token counts that do not match.
    """
    views = [views] if isinstance(views, AttentionView) else list(views)
    if not views:
        raise ValueError("views is empty: give at least one AttentionView")
    data = {"title": title, "views": [_view_data(v, batch_index, digits) for v in views]}
    body = EXPLORER_BODY.format(title=html.escape(title))
    return html_document(title, body, css=EXPLORER_CSS, js=EXPLORER_JS, data=data)


def write_attention_explorer(
    path: str | os.PathLike[str],
    views: AttentionView | Sequence[AttentionView],
    *,
    title: str = "qkv attention explorer",
    batch_index: int = 0,
    digits: int = 4,
) -> Path:
    """Writes :func:`attention_explorer_html` to ``path`` (UTF-8, atomically).

    Args:
        path: output ``.html`` path; parent folders are created.
        views: one or more :class:`AttentionView`.
        title: page title.
        batch_index: which example of 4-D weights to show.
        digits: decimals kept per weight.

    Returns:
        The path written; open it in any browser, offline.
    """
    page = attention_explorer_html(views, title=title, batch_index=batch_index, digits=digits)
    return atomic_write(path, lambda f: f.write(page.encode("utf-8")))
