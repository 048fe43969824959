"""Shared test fixtures: the golden data lives in ``../shared`` beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert SHARED.is_dir(), f"golden data folder {SHARED} is missing (it sits beside the checkout)"
    return SHARED
