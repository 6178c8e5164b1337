"""``qkv demo``: the attention core at work on a small example."""

from __future__ import annotations

import torch

from qkv.functional import causal_mask, padding_mask, scaled_dot_product_attention
from qkv.modules import MultiHeadAttention


def _print_matrix(title: str, rows: list[str], cols: list[str], w: torch.Tensor) -> None:
    print(title)
    print("      " + " ".join(f"{c:>5}" for c in cols))
    for r, row in zip(rows, w.tolist(), strict=True):
        print(f"{r:>5} " + " ".join(f"{x:5.2f}" for x in row))


def run_attention_demo(seed: int = 0) -> None:
    """Print attention weights for a tiny sentence: plain, causal, padded, and multi-head."""
    torch.manual_seed(seed)
    tokens = ["the", "cat", "sat", "on", "mat"]
    L, E = len(tokens), 8
    x = torch.randn(1, 1, L, E)  # (B, H, L, E): one sequence, one head
    x[0, 0, 4] = x[0, 0, 1] + 0.1 * torch.randn(E)  # "mat" looks like "cat"
    out, w = scaled_dot_product_attention(x, x, x, return_weights=True)
    _print_matrix("softmax(QK^T/sqrt(d_k)), Q = K = V = x:", tokens, tokens, w[0, 0])
    _, w = scaled_dot_product_attention(x, x, x, causal=True, return_weights=True)
    _print_matrix("\nwith a causal mask (no peeking ahead):", tokens, tokens, w[0, 0])
    keep = padding_mask(torch.tensor([3]), max_len=L)  # only the first 3 tokens are real
    _, w = scaled_dot_product_attention(x, x, x, mask=keep, return_weights=True)
    _print_matrix("\nwith the last two tokens as padding:", tokens, tokens, w[0, 0])
    mha = MultiHeadAttention(d_model=16, num_heads=4).eval()
    h = torch.randn(1, L, 16)
    with torch.no_grad():
        y, w = mha(h, mask=causal_mask(L), return_weights=True)
    rows_sum_to_one = bool(torch.allclose(w.sum(-1), torch.ones(1)))
    print(f"\nMultiHeadAttention(d_model=16, num_heads=4): in {tuple(h.shape)} -> out {tuple(y.shape)},")
    print(f"  weights {tuple(w.shape)} (B, H, L, S); each row sums to 1: {rows_sum_to_one}")
