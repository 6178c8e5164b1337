"""Tiny models and data for the trainer tests (also imported by the subprocess scripts)."""

from __future__ import annotations

import torch
from torch import nn

from qkv.training import label_smoothed_nll

PAD = 0
VOCAB = 11


class TinyLM(nn.Module):
    """Embedding -> dropout -> GELU MLP -> LayerNorm -> tied output projection: (B, L) -> (B, L, V)."""

    def __init__(self, vocab: int = VOCAB, d: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.drop = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.embed(ids))  # (B, L, d)
        return self.head(self.norm(h + self.mlp(h)))  # (B, L, V)


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token loss (label smoothing 0.1, pad ignored) and the token count."""
    x, y = batch
    total, n = label_smoothed_nll(model(x), y, smoothing=0.1, ignore_index=PAD)
    return total / n.clamp(min=1), n


class ShuffledBatches:
    """Fixed batches of a next-token task, reshuffled per epoch from (seed, epoch) only.

    The sequence is "count up mod (VOCAB - 1)" so a model can learn it; some targets are padding.
    """

    def __init__(self, n_batches: int = 6, batch: int = 4, length: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB - 1, (n_batches * batch, 1), generator=g)
        seq = (start + torch.arange(length + 1)) % (VOCAB - 1) + 1  # ids 1..VOCAB-1
        seq[::3, -2:] = PAD  # padded tails
        self.x, self.y = seq[:, :-1], seq[:, 1:].clone()
        self.batch, self.seed, self.epoch = batch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.x.size(0) // self.batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.x.size(0), generator=g)
        for i in range(len(self)):
            idx = order[i * self.batch : (i + 1) * self.batch]
            yield self.x[idx], self.y[idx]
