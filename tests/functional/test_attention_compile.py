"""Under torch.compile the attention dispatcher's backend query is a constant, not a graph break, and nothing
warns; importing qkv.functional does not import torch._dynamo (seconds of start-up for every command)."""

import subprocess
import sys
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from qkv.functional import scaled_dot_product_attention


def test_causal_attention_under_the_math_backend_compiles_to_one_graph():
    def f(q, k, v):
        return scaled_dot_product_attention(q, k, v, causal=True)

    q, k, v = (torch.randn(2, 2, 8, 16) for _ in range(3))  # fp32, L 8: neither short nor chunked kernels
    with sdpa_kernel([SDPBackend.MATH]), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = torch.compile(f, backend="eager", fullgraph=True)  # a graph break would raise here
        torch.testing.assert_close(compiled(q, k, v), f(q, k, v))
    assert not [str(w.message) for w in caught if "qkv" in str(w.message) or "attention.py" in str(w.message)]


def test_importing_functional_leaves_dynamo_unimported():
    code = "import sys, qkv.functional; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
