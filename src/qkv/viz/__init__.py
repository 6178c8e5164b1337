"""Attention you can see: heatmaps, per-head grids, training curves, and an interactive HTML explorer.

Inputs are weights in the SDPA layout ``(B, H, L, S)`` (or ``(L, S)``) plus token labels; this package
never imports or runs a model. matplotlib is imported lazily and used without pyplot (Agg canvas).

- :func:`attention_heatmap`, :func:`attention_heads_grid` -> ``Figure``; :func:`save_figure` writes a PNG.
- :func:`training_curves` from metric dicts or a ``metrics.jsonl`` file.
- :func:`write_attention_explorer` writes one self-contained HTML file from :class:`AttentionView` s.
"""

from qkv.viz._common import display_token, save_figure
from qkv.viz.curves import read_metrics_jsonl, training_curves
from qkv.viz.explorer import AttentionView, attention_explorer_html, embed_json, write_attention_explorer
from qkv.viz.heatmap import attention_heads_grid, attention_heatmap

__all__ = [
    "AttentionView",
    "attention_explorer_html",
    "attention_heads_grid",
    "attention_heatmap",
    "display_token",
    "embed_json",
    "read_metrics_jsonl",
    "save_figure",
    "training_curves",
    "write_attention_explorer",
]
