"""nn.Modules: parameters and head split/merge around :mod:`qkv.functional`."""

from qkv.modules.additive import AdditiveAttention, LuongAttention
from qkv.modules.attention import CausalSelfAttention, MultiHeadAttention, SelfAttention, mask_from_torch
from qkv.modules.kv_cache import KVCache

__all__ = [
    "SelfAttention",
    "MultiHeadAttention",
    "CausalSelfAttention",
    "mask_from_torch",
    "AdditiveAttention",
    "LuongAttention",
    "KVCache",
]

# Transformer parts (issue 3).
from qkv.modules.blocks import DecoderBlock, DecoderStack, EncoderBlock, EncoderStack, LayerCache  # noqa: E402
from qkv.modules.embeddings import (  # noqa: E402
    ALiBi,
    InputEmbedding,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SegmentEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from qkv.modules.feed_forward import FeedForward, GatedFeedForward  # noqa: E402

__all__ += [
    "EncoderBlock",
    "DecoderBlock",
    "EncoderStack",
    "DecoderStack",
    "LayerCache",
    "TokenEmbedding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "SegmentEmbedding",
    "InputEmbedding",
    "RotaryEmbedding",
    "ALiBi",
    "FeedForward",
    "GatedFeedForward",
]

from qkv.modules.projection import TiedOutput  # noqa: E402

__all__ += ["TiedOutput"]
