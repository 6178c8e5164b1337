"""Pure tensor functions for attention: no parameters, imports torch only."""

from qkv.functional.accelerators import Route
from qkv.functional.additive import additive_scores, dot_scores
from qkv.functional.attention import (
    attention_math,
    attention_weights,
    explain,
    masked_softmax,
    scaled_dot_product_attention,
)
from qkv.functional.chunked import chunked_attention, chunked_route
from qkv.functional.linear import (
    draw_orthogonal_features,
    elu_feature_map,
    favor_features,
    feature_maps,
    kernel_attention,
    linear_attention,
    linear_attention_step,
)
from qkv.functional.masks import causal_mask, combine, padding_mask, sliding_window_mask
from qkv.functional.sparse import (
    bigbird_attention,
    bigbird_layout,
    block_sparse_attention,
    dilated_layout,
    local_layout,
    sliding_window_attention,
    strided_attention,
    strided_layout,
)

__all__ = [
    "scaled_dot_product_attention",
    "explain",
    "Route",
    "chunked_route",
    "attention_math",
    "attention_weights",
    "masked_softmax",
    "causal_mask",
    "padding_mask",
    "sliding_window_mask",
    "combine",
    "additive_scores",
    "dot_scores",
    "chunked_attention",
    "block_sparse_attention",
    "sliding_window_attention",
    "bigbird_attention",
    "strided_attention",
    "local_layout",
    "dilated_layout",
    "strided_layout",
    "bigbird_layout",
    "linear_attention",
    "feature_maps",
    "kernel_attention",
    "linear_attention_step",
    "elu_feature_map",
    "favor_features",
    "draw_orthogonal_features",
]
