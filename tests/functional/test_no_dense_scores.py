"""The memory rule: for L, S >= 1024 no path without weights allocates an L x S float tensor, dropout included.

Every aten op's fresh floating output is watched (a TorchDispatchMode; views of existing storage are not
allocations). The same probe flags the math path, which does build the scores, and torch's CPU SDPA with
dropout, which takes that path, so it can fail."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import qkv.kernels
from qkv.functional import attention_math, chunked_attention, explain, scaled_dot_product_attention

L = S = 1024


class LargestAllocation(TorchDispatchMode):
    """Records the largest fresh floating-point op output (elements) and the op that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = (0, "")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.untyped_storage().data_ptr() not in seen:
                self.largest = max(self.largest, (t.numel(), str(func)))
        return out


def largest_allocation(fn) -> tuple[int, str]:
    probe = LargestAllocation()
    with probe:
        fn()
    return probe.largest


def inputs(dtype):
    q, k, v = (torch.randn(1, 1, n, 32, dtype=dtype, requires_grad=True) for n in (L, S, S))
    mask = torch.rand(1, 1, L, S) > 0.1
    return q, k, v, mask, torch.randn(1, 1, L, S, dtype=dtype)


CASES = {"plain": lambda m, b: {}, "causal": lambda m, b: dict(causal=True), "mask": lambda m, b: dict(mask=m),
         "bias": lambda m, b: dict(bias=b), "mask_bias": lambda m, b: dict(mask=m, bias=b),
         "mask_causal": lambda m, b: dict(mask=m, causal=True),
         "plain_dropout": lambda m, b: dict(dropout_p=0.1), "causal_dropout": lambda m, b: dict(causal=True, dropout_p=0.1),
         "mask_dropout": lambda m, b: dict(mask=m, dropout_p=0.1)}


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "torch_only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_no_path_allocates_the_scores(case, dtype, kernels):
    q, k, v, mask, bias = inputs(dtype)
    kw = CASES[case](mask, bias)

    def step():
        scaled_dot_product_attention(q, k, v, **kw).sum().backward()

    if kernels:
        n, op = largest_allocation(step)
    else:
        with qkv.kernels.disabled():
            n, op = largest_allocation(step)
    assert n < L * S, f"{explain(q, k, v, **kw).path} allocated {n} elements in {op}"


def test_causal_chunk_after_cached_keys_and_chunked_attention():
    q, _, _, mask, _ = inputs(torch.float32)
    k, v = (torch.randn(1, 1, 2 * S, 32, requires_grad=True) for _ in range(2))  # L queries after S cached keys
    n, op = largest_allocation(lambda: scaled_dot_product_attention(q, k, v, causal=True).sum().backward())
    assert n < L * 2 * S, op
    n, op = largest_allocation(lambda: chunked_attention(q, k[:, :, :S], v[:, :, :S], mask=mask, causal=True).sum()
                               .backward())
    assert n < L * S, op


def test_the_probe_sees_the_scores_of_the_math_path():
    q, k, v, _, _ = inputs(torch.float32)
    n, _ = largest_allocation(lambda: attention_math(q, k, v)[0].sum().backward())
    assert n >= L * S
    n, _ = largest_allocation(lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1).sum().backward())
    assert n >= L * S  # torch's CPU SDPA applies dropout to the full weights: why such calls are routed away
