"""An autouse fixture for test folders of tiny models: one intra-op thread is as fast on an idle machine and
avoids OpenMP spin-waiting (ten-fold slow-downs) when other processes share the cores. A folder's
``conftest.py`` opts in with ``from tests.one_thread import one_thread  # noqa: F401``."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
