"""Language-modelling recipes: packed text blocks, a decoder-only model, next-token loss, sampling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qkv.data import PackedTextDataset, make_loader, read_text
from qkv.data.tokenizer_pair import train_tokenizer
from qkv.generation import generate
from qkv.recipes.config import DecodeConfig, Recipe, RecipeError
from qkv.training.losses import lm_loss

__all__ = ["LMData", "build_data", "loss_fn", "sample_text", "TextStream", "test_data"]


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
    """Continue ``prompt``; ``on_text`` receives each new piece of text as it is produced (streaming).

    Past the model's context (``config.max_len``) generation goes on in chunks over a sliding window: the
    last half context of text is the prompt of the next chunk.
    """
    device = next(model.parameters()).device
    model.eval()
    opts: dict[str, Any] = {"strategy": dec.strategy}
    if dec.strategy == "sample":
        opts.update(temperature=dec.temperature, top_k=dec.top_k, top_p=dec.top_p,
                    generator=torch.Generator(device=device).manual_seed(seed))
    stream = TextStream(tokenizer, on_text) if on_text is not None else None
    callback = None if stream is None else (lambda step: stream.add(int(step.tokens[0])))
    context = model.config.max_len
    ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
    new: list[int] = []
    while len(new) < max_new_tokens:
        history = ids + new
        window = history[-(context // 2):] if len(history) >= context else history
        n = min(max_new_tokens - len(new), context - len(window))
        chunk = generate(model, torch.tensor([window], device=device), max_new_tokens=n, on_token=callback,
                         **opts)[0].tolist()
        if not chunk:
            break
        new += chunk
    if stream is not None:
        stream.close()
    return prompt + tokenizer.decode(new)


class TextStream:
    """Incremental detokenisation: ``on_text`` receives the text of the ids added so far, piece by piece, such
    that the pieces join to ``tokenizer.decode(all ids)``.

    A byte-level BPE token may end inside a multi-byte UTF-8 character, whose decoding then ends in U+FFFD
    until a later token completes it: such a tail is held back. Each :meth:`add` decodes a short window: the
    ids since the piece before the last one emitted (so tokenizers whose text depends on the neighbours, such
    as word tokenizers joining with spaces, are decoded in context), as vLLM's incremental detokeniser does.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] is the context already emitted; ids[read:] is new

    def add(self, token: int) -> None:
        self.ids.append(token)
        self._emit(final=False)

    def close(self) -> None:
        """Emit what is left (a held-back tail included)."""
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        context = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) > len(context) and (final or not text.endswith("\ufffd")):
            self.on_text(text[len(context) :])
            self.prefix, self.read = self.read, len(self.ids)
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
