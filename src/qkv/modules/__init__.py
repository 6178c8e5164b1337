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
