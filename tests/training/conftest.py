"""Trainer tests run tiny models on one thread (see tests/one_thread.py)."""

from tests.one_thread import one_thread  # noqa: F401
