"""Pictures of a trained run: training curves, attention heatmaps per head, the HTML explorer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qkv.viz import (
    AttentionView,
    attention_heads_grid,
    read_metrics_jsonl,
    save_figure,
    training_curves,
    write_attention_explorer,
)

__all__ = ["curve_png", "loss_note", "translation_attention_pictures", "translation_views"]


def curve_png(run_dir: str | Path, path: str | Path) -> Path | None:
    """``metrics.jsonl`` of a run as a training-curve PNG (None when there are no metrics yet); the loss
    panel notes what the training loss has that the validation loss has not (:func:`loss_note`)."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        return None
    curves = [r for r in read_metrics_jsonl(metrics) if r.get("split") in ("train", "eval")]  # not run/plan
    return save_figure(training_curves(curves, loss_note=loss_note(run_dir)), path)


def loss_note(run_dir: str | Path) -> str | None:
    """``"train loss: label smoothing 0.1, dropout 0.1"`` from a run's ``recipe.json`` and model config: why
    the training loss sits above the validation loss (which runs without either); None when nothing differs."""
    run_dir = Path(run_dir)
    parts = []
    recipe = run_dir / "recipe.json"
    if recipe.is_file():
        smoothing = json.loads(recipe.read_text(encoding="utf-8")).get("label_smoothing")
        if smoothing:
            parts.append(f"label smoothing {smoothing:g}")
    config = run_dir / "latest" / "config.json"
    if config.is_file():
        dropout = json.loads(config.read_text(encoding="utf-8")).get("model", {}).get("dropout")
        if dropout:
            parts.append(f"dropout {dropout:g}")
    return "train loss: " + ", ".join(parts) + " (not in val loss)" if parts else None


def translation_views(maps: dict[str, Any]) -> list[AttentionView]:
    """Explorer views of :func:`qkv.recipes.translation.attention_maps` output."""
    src, out = maps["source_tokens"], maps["output_tokens"]
    views = [AttentionView("encoder-decoder attention", maps["cross"], out, src)]
    if "encoder" in maps:
        views.append(AttentionView("encoder self-attention", maps["encoder"], src))
    if "self" in maps:
        views.append(AttentionView("decoder self-attention", maps["self"], out))
    return views


def translation_attention_pictures(maps: dict[str, Any], png: str | Path, *, title: str = "") -> Path:
    """One panel per head of the last layer's encoder-decoder attention: output (rows) x source (columns)."""
    fig = attention_heads_grid(maps["cross"][-1], maps["output_tokens"], maps["source_tokens"],
                               title=title, xlabel="source", ylabel="output")
    return save_figure(fig, png)


def write_explorer(views: list[AttentionView], path: str | Path, *, title: str) -> Path:
    return write_attention_explorer(path, views, title=title)
