"""``qkv attention``: the attention of a trained run for one input, as PNG heatmaps and an HTML explorer."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from qkv.cli.errors import UsageError


def _lm_or_encoder_maps(run, text: str) -> tuple[list[torch.Tensor], list[str]]:
    tok = run.tokenizer
    ids = tok.encode(text)
    if not ids:
        raise UsageError("--text is empty after tokenisation")
    if run.task == "classify" and tok.bos_id is not None:  # as the classifier saw it (pretrained files add [CLS])
        ids = [tok.bos_id] + ids
    x = torch.tensor([ids], device=next(run.model.parameters()).device)
    with torch.no_grad():
        _, weights = run.model(x, return_weights=True)
    labels = [tok.id_to_token(i) if hasattr(tok, "id_to_token") else tok.decode([i]) for i in ids]
    return [w[0].cpu() for w in weights], labels


def render(args: argparse.Namespace) -> list[Path]:
    """Write ``layer<k>.png`` (one panel per head) and ``attention.html`` into ``args.out``."""
    from qkv.cli.commands import _device
    from qkv.recipes import load_run, pictures
    from qkv.recipes.translation import attention_maps, translate_texts
    from qkv.viz import AttentionView, attention_heads_grid, save_figure

    run = load_run(args.run, device=_device(args))
    out = Path(args.out) if args.out else Path(args.run) / "attention"
    if not args.text.strip():
        raise UsageError("--text is empty")
    if run.task == "translation":
        from qkv.cli.commands import _decode

        target = args.target or translate_texts(run.model, run.tokenizer, [args.text], _decode(run, args))[0]
        maps = attention_maps(run.model, run.tokenizer, args.text, target)
        n_layers = len(maps["cross"])
        _check_layer(args.layer, n_layers)
        png = pictures.translation_attention_pictures(
            {**maps, "cross": [maps["cross"][args.layer]]}, out / f"cross_layer{args.layer % n_layers}.png",
            title=f"{args.text} -> {target}")
        views = pictures.translation_views(maps)
        return [png, pictures.write_explorer(views, out / "attention.html", title=f"qkv attention: {args.text}")]
    weights, labels = _lm_or_encoder_maps(run, args.text)
    _check_layer(args.layer, len(weights))
    layer = args.layer % len(weights)
    fig = attention_heads_grid(weights[layer], labels, labels, title=f"self-attention, layer {layer}")
    png = save_figure(fig, out / f"self_layer{layer}.png")
    view = AttentionView("self-attention", weights, labels)
    return [png, pictures.write_explorer([view], out / "attention.html", title=f"qkv attention: {args.text}")]


def _check_layer(layer: int, n: int) -> None:
    if not -n <= layer < n:
        raise UsageError(f"--layer must be in [-{n}, {n - 1}] for this model, got {layer}")
