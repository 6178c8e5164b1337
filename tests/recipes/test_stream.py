"""Streaming text as it is generated: the pieces join to the returned text, multi-byte characters whole
(IncrementalText itself: tests/generation/test_text.py)."""

import torch

from qkv.data import BPETokenizer
from qkv.recipes import lm
from qkv.recipes.config import DecodeConfig

TEXT = "naïve café — 日本語 ✓ 🙂 déjà vu"


class _Config:
    max_len = 512


class _Model(torch.nn.Module):
    config = _Config()

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def _scripted(ids):
    """A stand-in for ``generate`` that "chooses" ``ids`` one by one, calling ``on_token`` as generate does."""

    class Step:
        def __init__(self, token: int) -> None:
            self.tokens = torch.tensor([token])

    def generate(model, prompt, *, max_new_tokens, on_token=None, **kw):
        out = ids[:max_new_tokens]
        for t in out:
            if on_token is not None:
                on_token(Step(t))
        return torch.tensor(out if prompt.dim() == 1 else [out])

    return generate


def test_streamed_text_is_the_returned_text_with_byte_level_bpe(monkeypatch):
    tok = BPETokenizer.train(["plain ascii text only"], vocab_size=262, min_frequency=1)
    ids = tok.encode(TEXT)
    assert len(ids) > len(TEXT)  # characters span several byte tokens
    monkeypatch.setattr(lm, "generate", _scripted(ids))
    pieces = []
    out = lm.sample_text(_Model(), tok, "", DecodeConfig(strategy="greedy"), max_new_tokens=len(ids),
                         on_text=pieces.append)
    assert "".join(pieces) == out == TEXT
    assert not any("\ufffd" in p for p in pieces)
