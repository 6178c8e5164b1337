"""Trainer tests run tiny models: one intra-op thread is as fast on an idle machine and avoids
OpenMP spin-waiting (ten-fold slow-downs) when other processes share the cores."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
