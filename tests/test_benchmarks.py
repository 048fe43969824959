"""The benchmark scripts still run (they are not timed here: a test never asserts a speed)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MMP_CKPT
from torch import nn

from ofa_vl.model.precision import apply_precision

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


def test_step_cost_counts_the_weights_a_decoding_step_reads(fixture_model) -> None:
    """``step_cost.py`` (bench_generate's MB/step and ops/step): an fp32 step reads each Linear it
    runs and the output projection once, at most the decoder's parameters in all; a bf16 step
    reads the projection's bf16 table instead of the fp32 copy; int8-legacy its int8 weights."""
    sys.path.insert(0, str(BENCHMARKS))
    from step_cost import decoding_step_cost

    torch.manual_seed(0)
    images, ids = torch.randn(1, 3, 64, 64), torch.tensor([[0, 5, 6, 7, 2]])
    decoder = fixture_model.decoder
    step_linears = [  # every Linear of the layers but the cross keys/values (made once per image)
        m
        for name, m in decoder.layers.named_modules()
        if isinstance(m, nn.Linear)
        and not name.endswith(("cross_attn.k_proj", "cross_attn.v_proj"))
    ]
    linears = sum(p.nbytes for m in step_linears for p in m.parameters())
    table = decoder.output_projection.weight
    fp32 = decoding_step_cost(fixture_model, images, ids, beams=3)
    assert (
        linears + table.nbytes <= fp32.weight_bytes <= sum(p.nbytes for p in decoder.parameters())
    )
    packed = fp32.ops.get("mkldnn._linear_pointwise.default", 0)  # oneDNN's (model/linear.py)
    if packed:  # one kernel each Linear, and one the projection
        assert packed == len(step_linears) + 1
    else:
        assert fp32.ops["aten.addmm.default"] == len(step_linears)
    bf16 = decoding_step_cost(
        apply_precision(copy.deepcopy(fixture_model), "bf16"), images.bfloat16(), ids, 3
    )
    assert fp32.weight_bytes - bf16.weight_bytes >= linears / 2 + table.nbytes / 2
    legacy = decoding_step_cost(
        apply_precision(copy.deepcopy(fixture_model), "int8-legacy"), images, ids, 3
    )
    assert legacy.ops["quantized.linear_dynamic.default"] >= 1
    assert legacy.weight_bytes < fp32.weight_bytes - 0.7 * linears  # int8: a quarter of the bytes
