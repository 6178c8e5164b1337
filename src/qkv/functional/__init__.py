"""Pure tensor functions for attention: no parameters, imports torch only."""

from qkv.functional.additive import additive_scores, dot_scores
from qkv.functional.attention import attention_math, attention_weights, masked_softmax, scaled_dot_product_attention
from qkv.functional.masks import causal_mask, combine, padding_mask, sliding_window_mask

__all__ = [
    "scaled_dot_product_attention",
    "attention_math",
    "attention_weights",
    "masked_softmax",
    "causal_mask",
    "padding_mask",
    "sliding_window_mask",
    "combine",
    "additive_scores",
    "dot_scores",
]
