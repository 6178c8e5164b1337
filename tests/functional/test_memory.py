"""qkv.functional._memory: large CPU outputs advised onto huge pages, small ones left alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from qkv.functional._memory import advise_huge_pages, empty_large


def test_small_tensors_are_not_advised():
    assert not advise_huge_pages(torch.empty(1000))
    t = empty_large(3, 5, dtype=torch.bfloat16, device=torch.device("cpu"))
    assert t.shape == (3, 5) and t.dtype == torch.bfloat16


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_HUGEPAGE) is Linux only")
def test_large_tensors_are_advised_and_hold_their_values():
    if not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists():
        pytest.skip("kernel without transparent huge pages")
    t = empty_large(64, 1 << 18, dtype=torch.float32, device=torch.device("cpu"))  # 64 MiB
    assert advise_huge_pages(t)  # the kernel accepts the advice (again) on the aligned interior
    t.copy_(torch.arange(t.numel(), dtype=torch.float32).view_as(t))
    assert t[63, -1].item() == t.numel() - 1 and t[0, 0].item() == 0
