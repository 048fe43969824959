"""The benchmark scripts still run (they are not timed here: a test never asserts a speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MMP_CKPT

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True, text=True, timeout=600, cwd=BENCHMARKS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_bench_gpu_dry_run() -> None:
    """``bench_gpu.py --dry-run``: the GPU script's every CPU part, ids compared to CPU fp32."""
    out = script("bench_gpu.py", "--dry-run").splitlines()
    rows = [line.split() for line in out if line.startswith(("bf16", "fp16"))]
    assert [r[:2] for r in rows] == [["bf16", "1"], ["bf16", "2"], ["fp16", "1"], ["fp16", "2"]]


@pytest.mark.slow
def test_bf16_agreement_on_the_fixture() -> None:
    out = script(
        "bf16_agreement.py", "--checkpoint", str(MMP_CKPT), "--preset", "",
        "--images", "2", "--image-size", "64", "--new-tokens", "4",
    )  # fmt: skip
    assert "generated ids equal to fp32: " in out and "/8 (" in out, out
