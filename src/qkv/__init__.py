"""qkv: attention and the Transformer end to end, on PyTorch.

The names below are imported on first use (PEP 562), so that ``import qkv`` and the ``qkv`` command's
``--help`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Packages with faster kernels, imported on the first attention call (qkv.functional.accelerators); each registers
# its accelerator there. qkv.functional never imports them itself.
ACCELERATORS = ("qkv.kernels",)

# public name -> the module that defines it
_LAZY = {
    "functional": "qkv.functional",
    "kernels": "qkv.kernels",
    "modules": "qkv.modules",
    "scaled_dot_product_attention": "qkv.functional",
    "SelfAttention": "qkv.modules",
    "MultiHeadAttention": "qkv.modules",
    "AdditiveAttention": "qkv.modules",
    "LuongAttention": "qkv.modules",
    "KVCache": "qkv.modules",
}

__all__ = [
    "functional",
    "kernels",
    "modules",
    "scaled_dot_product_attention",
    "SelfAttention",
    "MultiHeadAttention",
    "AdditiveAttention",
    "LuongAttention",
    "KVCache",
    "__version__",
]

if TYPE_CHECKING:
    from qkv import functional, kernels, modules
    from qkv.functional import scaled_dot_product_attention
    from qkv.modules import AdditiveAttention, KVCache, LuongAttention, MultiHeadAttention, SelfAttention


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'qkv' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"qkv.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
