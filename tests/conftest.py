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


MMP_CKPT = FIXTURES / "mmpretrain-ofa" / "ofa-test_seed0.pth"


@pytest.fixture(scope="session")
def fixture_model():
    """The golden-fixture OFA (mmpretrain layout, 2+2 layers, width 64), loaded once."""
    from ofa_vl import OFA

    return OFA.from_pretrained(MMP_CKPT)


@pytest.fixture(scope="session", params=[64, 96])
def golden(request) -> dict:
    """One golden case of the reference implementation (image size 64 or 96)."""
    import torch

    path = FIXTURES / "mmpretrain-ofa" / f"ofa-test_seed0_img{request.param}.pt"
    return torch.load(path, weights_only=True)
