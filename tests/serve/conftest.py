"""Server tests: tiny runs trained once per session, one thread for torch (see tests/one_thread.py)."""

import pytest

from tests.one_thread import one_thread  # noqa: F401
from tests.serve import runs

pytest.importorskip("fastapi", reason="qkv serve needs the serve extra: pip install -e '.[serve]'")


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    return runs.lm_run(tmp_path_factory.mktemp("serve-lm"))


@pytest.fixture(scope="session")
def mt_dir(tmp_path_factory):
    return runs.mt_run(tmp_path_factory.mktemp("serve-mt"))


@pytest.fixture(scope="session")
def enc_dir(tmp_path_factory):
    return runs.encoder_run(tmp_path_factory.mktemp("serve-enc"))
