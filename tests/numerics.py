"""PyTorch's own scheme for checking kernels: a float64 golden result, a same-precision reference,
and the path under test, which must be within a small factor of the reference's own error."""

from __future__ import annotations

import torch

FLOORS = {torch.float32: 1e-5, torch.float64: 1e-10, torch.bfloat16: 1e-3, torch.float16: 1e-3}


def assert_close_to_golden(
    actual: torch.Tensor,
    reference: torch.Tensor,
    golden: torch.Tensor,
    *,
    factor: float = 4.0,
    floor: float | None = None,
    name: str = "output",
) -> None:
    """|actual - golden| <= factor * |reference - golden| + floor (max abs, elementwise)."""
    floor = FLOORS[actual.dtype] if floor is None else floor
    golden = golden.double()
    err = (actual.double() - golden).abs().max().item() if actual.numel() else 0.0
    ref_err = (reference.double() - golden).abs().max().item() if reference.numel() else 0.0
    bound = factor * ref_err + floor
    assert err <= bound, f"{name}: error {err:.3e} vs golden exceeds {factor} x reference error {ref_err:.3e} + {floor:.0e}"
