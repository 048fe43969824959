"""The golden data in the repository: recorded sha256s, sizes, and the seeded fixture checkpoint."""

from __future__ import annotations

import hashlib
import re

import golden_weights
import pytest
import torch
from conftest import GOLDENS, IMAGES, MMP_CKPT

DATA = sorted(p for d in (GOLDENS, IMAGES) for p in d.rglob("*") if p.is_file())


def recorded_sha256() -> dict[str, str]:
    """``<sha256>  tests/<path>`` lines of goldens/README.md."""
    text = (GOLDENS / "README.md").read_text()
    return {path: digest for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}


def test_every_golden_file_has_its_recorded_sha256() -> None:
    recorded = recorded_sha256()
    files = {
        f"tests/{p.relative_to(GOLDENS.parent)}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in DATA
        if p.name != "README.md"
    }
    assert files == recorded


def test_golden_data_stays_small() -> None:
    sizes = [p.stat().st_size for p in DATA]
    assert max(sizes) < 10 * 2**20 and sum(sizes) < 40 * 2**20  # 28 MB: two CPUs' network sets


def test_checkpoint_is_the_recorded_one_with_every_parameter_non_trivial() -> None:
    sd = torch.load(MMP_CKPT, weights_only=True)
    spec = torch.load(golden_weights.SPEC, weights_only=True)
    assert golden_weights.digest(sd) == spec["sha256"] and len(sd) == len(spec["keys"]) == 419
    embed = sd[golden_weights.EMBED]
    assert all(sd[k].data_ptr() == embed.data_ptr() for k in golden_weights.TIED)  # one tensor
    for key, t in sd.items():
        if t.is_floating_point():
            assert t.std() > 0.01 and (t - 1).abs().max() > 0.01, key  # random, not 0 / 1 init
    params = [
        t for k, t in sd.items() if k not in golden_weights.TIED and not golden_weights.is_stored(k)
    ]
    assert sum(t.numel() for t in params) == 13_152_520


def test_a_changed_generator_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = golden_weights.random_tensor
    monkeypatch.setattr(golden_weights, "random_tensor", lambda *a: real(*a) * 1.001)
    with pytest.raises(golden_weights.GoldenWeightsError, match="not the recorded") as err:
        golden_weights.build()
    assert "\n" not in str(err.value)
