"""Tiny models and helpers for the generation tests (built from random configs, eval mode, no dropout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qkv.models import DecoderConfig, DecoderModel, EncoderDecoderModel, RNNSeq2SeqConfig, Seq2SeqConfig
from qkv.models.rnn_seq2seq import RNNSeq2Seq


def _small_embeddings(model: nn.Module, std: float = 0.1) -> nn.Module:
    """GPT-style small embedding init: tied logits of order 1, as in trained models (N(0, 1) gives ~40)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".token." in name:
                p.normal_(0.0, std)
            elif ".position." in name:  # positions as strong as tokens, so greedy outputs vary along a row
                p.normal_(0.0, 1.0)
    return model


def decoder(vocab: int = 13, *, kv_heads: int | None = None, positional: str = "learned", max_len: int = 48,
            norm_first: bool = True) -> DecoderModel:
    cfg = DecoderConfig(vocab_size=vocab, d_model=32, num_heads=4, num_kv_heads=kv_heads, num_layers=2,
                        max_len=max_len, dropout=0.0, positional=positional, norm_first=norm_first,
                        scale_embeddings=False)
    return _small_embeddings(DecoderModel(cfg)).eval()


def seq2seq(vocab: int = 13, *, kv_heads: int | None = None) -> EncoderDecoderModel:
    cfg = Seq2SeqConfig(src_vocab_size=vocab, d_model=32, num_heads=4, num_kv_heads=kv_heads,
                        num_encoder_layers=2, num_decoder_layers=2, max_len=48, dropout=0.0, scale_embeddings=False)
    return _small_embeddings(EncoderDecoderModel(cfg)).eval()


def rnn(vocab: int = 13, *, cell: str = "gru") -> RNNSeq2Seq:
    cfg = RNNSeq2SeqConfig(src_vocab_size=vocab, embed_dim=16, hidden_size=24, cell=cell, dropout=0.0)
    return RNNSeq2Seq(cfg).eval()


def sharpen(model: nn.Module, factor: float = 4.0) -> nn.Module:
    """Scale the output layer so next-token distributions are peaked (random models are nearly uniform)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".token." in name or name.startswith("out.") or name.startswith("lm_head"):
                p.mul_(factor)
    return model


class LinearState:
    """Causal linear attention as an RNN: running sums ``S = sum phi(k) v^T`` ``(B, H, E, E)`` and
    ``z = sum phi(k)`` ``(B, H, E)``: O(1) in the number of decoded tokens."""

    def __init__(self, B: int, H: int, E: int) -> None:
        self.s, self.z, self.length = torch.zeros(B, H, E, E), torch.zeros(B, H, E), 0

    def select(self, index: torch.Tensor) -> None:
        self.s, self.z = self.s[index], self.z[index]


class LinearLM(nn.Module):
    """A two-layer causal linear-attention LM (phi = elu + 1) following the DecoderModel contract."""

    def __init__(self, vocab: int = 11, d: int = 16, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.H, self.E = heads, d // heads
        self.embed = nn.Embedding(vocab, d)
        self.qkv = nn.ModuleList(nn.Linear(d, 3 * d) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(d, d) for _ in range(layers))
        self.head = nn.Linear(d, vocab)

    def new_cache(self, batch_size: int, max_len: int) -> list[LinearState]:
        return [LinearState(batch_size, self.H, self.E) for _ in self.qkv]

    def _attend(self, q, k, v, state: LinearState | None) -> torch.Tensor:
        q, k = F.elu(q) + 1, F.elu(k) + 1  # (B, H, L, E)
        if state is None:  # quadratic form with an explicit causal mask
            a = (q @ k.transpose(-1, -2)).tril()  # (B, H, L, L)
            return (a @ v) / a.sum(-1, keepdim=True)
        outs = []
        for t in range(q.shape[2]):  # the recurrence
            state.s = state.s + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, E, E)
            state.z = state.z + k[:, :, t]
            num = (q[:, :, t, None, :] @ state.s).squeeze(2)  # (B, H, E)
            outs.append(num / (q[:, :, t] * state.z).sum(-1, keepdim=True))
        state.length += q.shape[2]
        return torch.stack(outs, dim=2)  # (B, H, L, E)

    def forward(self, ids, *, key_padding=None, positions=None, cache=None, return_weights=False):
        x = self.embed(ids)  # (B, L, D)
        B, L, D = x.shape
        for i, (qkv, proj) in enumerate(zip(self.qkv, self.proj, strict=True)):
            q, k, v = (t.view(B, L, self.H, self.E).transpose(1, 2) for t in qkv(x).chunk(3, -1))  # (B, H, L, E)
            h = self._attend(q, k, v, None if cache is None else cache[i])
            x = x + proj(h.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
        return self.head(x)


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``ids (B, P)`` and ``key_padding (B, P)`` (True = real)."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    kp = torch.zeros(len(rows), P, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, P - len(r):] = torch.tensor(r)
        kp[b, P - len(r):] = True
    return ids, kp
