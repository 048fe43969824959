"""Shared test fixtures: the golden data of the reference implementation lives in ``goldens/``
(provenance in goldens/README.md); the fixture checkpoint is rebuilt from a seed (golden_weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_weights import write_checkpoint

TESTS = Path(__file__).resolve().parent
GOLDENS = TESTS / "goldens"
IMAGES = TESTS / "images"  # mmpretrain's demo images (provenance in goldens/README.md)
# The golden-fixture checkpoint (mmpretrain layout, 2+2 layers, width 64), built once per session
# into a git-ignored cache; a path, so tests can hand it to the CLI.
MMP_CKPT = TESTS / ".cache" / "ofa-test_seed0.pth"


def pytest_sessionstart(session: pytest.Session) -> None:
    write_checkpoint(MMP_CKPT)


@pytest.fixture(scope="session")
def fixture_model():
    """The golden-fixture OFA, loaded once."""
    from ofa_vl.checkpoints import load_model

    return load_model(MMP_CKPT)


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled English BPE tokenizer (the fixture model's vocabulary), loaded once."""
    from ofa_vl.tokenizer import ENGLISH_BPE, OFATokenizer

    return OFATokenizer.from_pretrained(ENGLISH_BPE)


# The network goldens as the reference computed them on two kinds of CPU (goldens/avx512/README.md).
GOLDEN_SETS = {"avx2": GOLDENS, "avx512": GOLDENS / "avx512"}


class GoldenCase(dict):
    """One network case: the AVX2 set's dict (inputs and ids are equal in every set) and, in
    ``sets``, each CPU's case, for float comparisons (``tolerance.assert_matches_reference``)."""

    def __init__(self, sets: dict[str, dict]) -> None:
        super().__init__(sets["avx2"])
        self.sets = sets


@pytest.fixture(scope="session", params=[64, 96])
def golden(request) -> GoldenCase:
    """One golden case of the reference implementation (image size 64 or 96)."""
    import torch

    name = f"ofa-test_seed0_img{request.param}.pt"
    return GoldenCase(
        {cpu: torch.load(d / name, weights_only=True) for cpu, d in GOLDEN_SETS.items()}
    )
