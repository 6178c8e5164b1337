"""qkv: attention and the Transformer end to end, on PyTorch."""

from qkv import functional, modules
from qkv.functional import scaled_dot_product_attention
from qkv.modules import AdditiveAttention, KVCache, LuongAttention, MultiHeadAttention, SelfAttention

__version__ = "0.1.0"

__all__ = [
    "functional",
    "modules",
    "scaled_dot_product_attention",
    "SelfAttention",
    "MultiHeadAttention",
    "AdditiveAttention",
    "LuongAttention",
    "KVCache",
    "__version__",
]
