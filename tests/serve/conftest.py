"""Server tests: tiny runs trained once per session, one thread for torch (see tests/one_thread.py)."""

import pytest

from tests.one_thread import one_thread  # noqa: F401
from tests.serve import runs


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    return runs.lm_run(tmp_path_factory.mktemp("serve-lm"))


@pytest.fixture(scope="session")
def mt_dir(tmp_path_factory):
    return runs.mt_run(tmp_path_factory.mktemp("serve-mt"))


@pytest.fixture(scope="session")
def enc_dir(tmp_path_factory):
    return runs.encoder_run(tmp_path_factory.mktemp("serve-enc"))


def _client(run_dir, **options):
    from fastapi.testclient import TestClient

    from qkv.serve import create_app

    return TestClient(create_app(run_dir, **options))


@pytest.fixture(scope="session")
def lm(lm_dir):
    """A TestClient of the language model's app (engine running)."""
    with _client(lm_dir, max_batch=8) as client:
        yield client


@pytest.fixture(scope="session")
def mt(mt_dir):
    """A TestClient of the translator's app."""
    with _client(mt_dir, max_batch=8) as client:
        yield client


@pytest.fixture(scope="session")
def enc(enc_dir):
    """A TestClient of the classifier's app."""
    with _client(enc_dir) as client:
        yield client
