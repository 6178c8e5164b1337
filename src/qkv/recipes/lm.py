"""Language-modelling recipes: packed text blocks, a decoder-only model, next-token loss, sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qkv.data import PackedTextDataset, make_loader, read_text
from qkv.data.tokenizer_pair import train_tokenizer
from qkv.generation import IncrementalText, generate
from qkv.recipes.config import DecodeConfig, Recipe, RecipeError
from qkv.training.losses import lm_loss

__all__ = ["LMData", "build_data", "loss_fn", "sample_text", "test_data"]


@dataclass
class LMData:
    tokenizer: Any
    train: PackedTextDataset
    valid: PackedTextDataset


def build_data(recipe: Recipe) -> LMData:
    d = recipe.data
    if d.source != "files" or not isinstance(d.train, str):
        raise RecipeError(
            f"the lm task needs data.source=files and data.train=<text file>, got {d.source!r}, {d.train!r}"
        )
    text = read_text(d.train)
    t = recipe.tokenizer
    tok = train_tokenizer(t.kind, [text], vocab_size=t.vocab_size, min_frequency=t.min_frequency)
    full = PackedTextDataset.from_text(text, tok, d.block_size)
    if d.valid:
        train, valid = full, PackedTextDataset.from_text(read_text(d.valid), tok, d.block_size)
    else:
        train, valid = full.split(val_fraction=d.val_fraction)
    return LMData(tok, train, valid)


loss_fn = lm_loss


def loader(recipe: Recipe, ds: PackedTextDataset, *, shuffle: bool = True):
    return make_loader(ds, batch_size=recipe.data.batch_size or 12, shuffle=shuffle, seed=recipe.data.seed)


def sample_text(model: nn.Module, tokenizer: Any, prompt: str, dec: DecodeConfig, *, max_new_tokens: int,
                seed: int = 0, on_text: Callable[[str], None] | None = None) -> str:
    """Continue ``prompt`` with :func:`qkv.generation.generate` (what ``qkv generate`` prints).

    Past the model's context generation goes on by generate's one policy, the sliding window
    (:mod:`qkv.generation.window`); sampling draws from ``torch.Generator().manual_seed(seed)``, so
    ``generate(model, ids, seed=seed, ...)`` in Python gives the same tokens.

    Args:
        model: a decoder-only language model.
        tokenizer: the run's tokenizer; an empty prompt starts from its ``bos_id``.
        prompt: the text to continue.
        dec: greedy or sampling, with temperature / top-k / top-p.
        max_new_tokens: how many tokens to add.
        seed: the sampler's seed.
        on_text: receives each new piece of text as it is produced (streaming); the pieces join to the
            returned text after the prompt.

    Returns:
        ``prompt`` followed by the decoded new tokens.
    """
    device = next(model.parameters()).device
    model.eval()
    opts: dict[str, Any] = {"strategy": dec.strategy}
    if dec.strategy == "sample":
        opts.update(temperature=dec.temperature, top_k=dec.top_k, top_p=dec.top_p, seed=seed)
    text = IncrementalText(tokenizer)

    def emit(piece: str) -> None:
        if piece and on_text is not None:
            on_text(piece)

    callback = None if on_text is None else (lambda step: emit(text.push(int(step.tokens[0]))))
    ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
    new = generate(model, torch.tensor(ids, device=device), max_new_tokens=max_new_tokens, on_token=callback,
                   **opts).tolist()
    emit(text.finish())
    return prompt + tokenizer.decode(new)


def test_data(recipe: Recipe, tokenizer: Any) -> tuple[PackedTextDataset, str]:
    """The recipe's held-out text, tokenised: ``data.test``, else ``data.valid``, else the last
    ``val_fraction`` of ``data.train`` (nanoGPT's split, as training validated on it)."""
    d = recipe.data
    if d.source != "files" or not isinstance(d.train, str):
        raise RecipeError("the run's recipe has no text file to hold out from")
    for name in ("test", "valid"):
        path = getattr(d, name)
        if path:
            return PackedTextDataset.from_text(read_text(path), tokenizer, d.block_size), f"data.{name} ({path})"
    held_out = PackedTextDataset.from_text(read_text(d.train), tokenizer, d.block_size).split(d.val_fraction)[1]
    return held_out, f"the last {d.val_fraction:.0%} of data.train ({d.train})"
