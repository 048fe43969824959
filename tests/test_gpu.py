"""The CUDA paths: bf16 inference, a training step resumed on the GPU (CUDA RNG restored), DDP with
devices (nccl). Every test skips itself where CUDA is absent; DDP needs two GPUs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from test_train import (  # noqa: F401 (fixtures)
    _args,
    _final_weights,
    _parse,
    _straight_and_stopped,
    data,
    tiny_model,
    torchrun_train,
)
from tolerance import assert_close_to

from ofa_vl.api import get_model
from ofa_vl.images import preprocess
from ofa_vl.metrics import box_iou
from ofa_vl.shapes.world import generate_scene, render_scene
from ofa_vl.tasks import TextFields
from ofa_vl.train import read_metrics, train
from ofa_vl.zoo import DEFAULT_MODEL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
BF16_TOL = 0.05  # bf16 keeps 8 bits of mantissa: ~0.4 % a rounding, a few % through the layers


def test_cuda_fp32_equals_cpu_and_bf16_is_close() -> None:
    """Encoder states and decoder logits of the bundled model: CUDA fp32 = CPU fp32 (1e-4);
    bf16 autocast within BF16_TOL of fp32, relative to the largest value."""
    cpu = get_model(DEFAULT_MODEL, task="refcoco", device="cpu")
    gpu = get_model(DEFAULT_MODEL, task="refcoco", device="cuda")
    scene = render_scene(generate_scene(random.Random(0), 128))
    pixels, _ = preprocess(scene, 128)
    ids = cpu.tokenizer([cpu.task.prompt(TextFields("the red circle"))])["input_ids"]
    dec = torch.tensor([[0, 5, 6]])

    def run(pipe, device: str, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=bf16):
            enc = pipe.model.encode(ids.to(device), pixels[None].to(device))
            logits = pipe.model.decoder(dec.to(device), enc)
        return enc.last_hidden_state.float().cpu(), logits.float().cpu()

    ref_enc, ref_logits = run(cpu, "cpu", False)
    enc, logits = run(gpu, "cuda", False)
    assert_close_to(enc, ref_enc, what="encoder states")
    assert_close_to(logits, ref_logits, what="logits")
    enc16, logits16 = run(gpu, "cuda", True)
    assert (enc16 - ref_enc).abs().max() <= BF16_TOL * ref_enc.abs().max()
    assert (logits16 - ref_logits).abs().max() <= BF16_TOL * ref_logits.abs().max()


def test_bf16_pipeline_grounds_like_fp32() -> None:
    """bf16 on CUDA through the pipeline (autocast in predict_batch): the boxes of fp32 within a
    few pixels, on the objects the scenes were drawn with."""
    fp32 = get_model(DEFAULT_MODEL, task="refcoco", device="cuda")
    bf16 = get_model(DEFAULT_MODEL, task="refcoco", device="cuda", precision="bf16")
    scenes = [generate_scene(random.Random(s), 128) for s in range(8)]
    images = [render_scene(s) for s in scenes]
    texts = [f"the {s.objects[0].colour} {s.objects[0].shape}" for s in scenes]
    truth = [list(s.objects[0].box) for s in scenes]
    a = [r["pred_bboxes"][0] for r in fp32(images, text=texts)]
    b = [r["pred_bboxes"][0] for r in bf16(images, text=texts)]
    assert (box_iou(a, truth) >= 0.5).float().mean() >= 0.75
    assert (box_iou(a, b) >= 0.9).float().mean() >= 0.75  # a bin may move, not the boxes


def test_training_step_resumes_on_cuda(data: Path, tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    """Dropout draws from the CUDA generator: a resume that did not restore it would give other
    masks, other losses. Equal to float tolerance (some CUDA backward kernels are not
    deterministic, see ofa_vl.train)."""
    extra = ("--task", "multitask", "--steps", "6", "--batch-size", "4", "--save-every", "3",
             "--dropout", "0.1", "--lr", "1e-3", "--device", "cuda")  # fmt: skip
    straight, resumed, state = _straight_and_stopped(data, tiny_model, tmp_path, extra)
    assert len(state["rng"][0]["cuda"]) == torch.cuda.device_count()
    rows = train(_parse(_args(data, tiny_model, resumed, *extra, "--resume")))
    assert [r["step"] for r in rows] == [4, 5, 6]
    want = [r["loss"] for r in read_metrics(straight / "metrics.csv")][3:]
    assert [r["loss"] for r in rows] == pytest.approx(want, rel=1e-4)
    a, b = _final_weights(straight), _final_weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)


def test_bf16_training_step_on_cuda(data: Path, tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    extra = ("--task", "multitask", "--steps", "2", "--batch-size", "4", "--save-every", "2",
             "--precision", "bf16", "--device", "cuda")  # fmt: skip
    rows = train(_parse(_args(data, tiny_model, tmp_path / "run", *extra)))
    assert len(rows) == 2 and all(0 < r["loss"] < 100 for r in rows)
    weights = _final_weights(tmp_path / "run")
    floats = [v for v in weights.values() if v.is_floating_point()]  # not BatchNorm's counters
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floats)


@pytest.mark.multiprocess
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with devices needs 2 GPUs")
def test_two_gpu_ddp_matches_one_gpu(data: Path, tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    """nccl, one process per GPU: the losses of one GPU with 2 accumulation steps."""
    common = ("--task", "multitask", "--steps", "4", "--batch-size", "4", "--dropout", "0",
              "--save-every", "4", "--lr", "1e-3", "--device", "cuda")  # fmt: skip
    single = tmp_path / "single"
    train(_parse(_args(data, tiny_model, single, *common, "--accum", "2")))
    ddp = tmp_path / "ddp"
    torchrun_train(data, tiny_model, ddp, common, {})
    losses_1 = [r["loss"] for r in read_metrics(single / "metrics.csv")]
    losses_2 = [r["loss"] for r in read_metrics(ddp / "metrics.csv")]
    assert losses_1 == pytest.approx(losses_2, rel=1e-3)
