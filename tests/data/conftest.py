"""Fixtures for qkv.data tests: the shared real data sets (skipped when absent) and small corpora."""

from pathlib import Path

import pytest

# tests/data/conftest.py -> parents[2] is the repository root; the data sets lie in ../shared/data.
SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    """The folder with multi30k/, tinyshakespeare/ and sst2/, or a skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def unicode_lines() -> list[str]:
    return [
        "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
        "Two young, White males are outside near many bushes.",
        "le 3 mars 2019 — «déjà vu» à l'été",
        "domingo, 3 de marzo de 2019: ¿señor? ¡sí!",
        "日本語のテキスト and emoji 🙂👍🏽 and tabs\tand  double  spaces",
    ]
