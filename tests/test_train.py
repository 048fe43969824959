"""``ofa train``: loss, data order, resume, DDP, checkpoints (a tiny model on a few 64 px scenes)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ofa_vl.checkpoints import load_model, save_pretrained
from ofa_vl.config import OFAConfig
from ofa_vl.data.training import (
    IGNORE_INDEX,
    TrainingDataset,
    build_word_tokenizer,
    collate,
    example_texts,
    load_examples,
)
from ofa_vl.model import OFA
from ofa_vl.shapes.world import write_shapes_dataset
from ofa_vl.train import (
    STATE_FILE,
    StepSampler,
    add_train_args,
    label_smoothed_loss,
    latest_checkpoint,
    read_metrics,
    train,
)

# tier: the whole module runs processes or trains (pyproject markers)
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TINY = dict(
    embed_dim=32,
    encoder_layers=1,
    decoder_layers=1,
    num_heads=2,
    resnet_layers=(1, 1, 1),
    resnet_width=8,
    max_positions=128,
    image_bucket_size=8,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root, 6, 2, seed=0, size=64)
    return root


@pytest.fixture(scope="module")
def tiny_model(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh tiny model folder (weights, word tokenizer, 64 px pipeline) to train from."""
    folder = tmp_path_factory.mktemp("tiny")
    tok = build_word_tokenizer(example_texts(load_examples(data, "multitask")))
    torch.manual_seed(0)
    model = OFA(OFAConfig(vocab_size=len(tok), **TINY))  # type: ignore[arg-type]
    model.init_weights()
    save_pretrained(model, folder / "model.safetensors")
    tok.save_pretrained(folder)
    (folder / "pipeline.json").write_text(
        json.dumps({"image_size": 64, "interpolation": "bilinear"})
    )
    return folder


def _args(data: Path, init: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--init", str(init), "--out", str(out), "--workers", "0",
        "--no-progress", "--log-every", "1", *extra,
    ]  # fmt: skip


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    return parser.parse_args(argv)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_model(out / "model.safetensors").state_dict()


def test_label_smoothed_loss_matches_hand_computation() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[IGNORE_INDEX, 4, 2], [0, IGNORE_INDEX, IGNORE_INDEX]])
    eps = 0.1
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            y = int(labels[b, t])
            if y == IGNORE_INDEX:
                continue
            logp = [
                math.log(math.exp(v) / sum(math.exp(u) for u in logits[b, t].tolist()))
                for v in logits[b, t].tolist()
            ]
            eps_i = eps / (5 - 1)
            total += (1 - eps - eps_i) * -logp[y] + eps_i * -sum(logp)
            count += 1
    loss, n = label_smoothed_loss(logits, labels, eps)
    assert n == count == 3
    assert loss.item() == pytest.approx(total, rel=1e-6)


def test_collate_ignores_decoder_prompt_and_padding() -> None:
    items = [
        {"image": torch.zeros(3, 4, 4), "input_ids": torch.tensor([0, 7, 2]),
         "decoder_prompt": torch.tensor([9, 9]), "target": torch.tensor([5])},
        {"image": torch.ones(3, 4, 4), "input_ids": torch.tensor([0, 2]),
         "decoder_prompt": torch.tensor([], dtype=torch.long), "target": torch.tensor([6, 8])},
    ]  # fmt: skip
    batch = collate(items, bos_id=0, eos_id=2, pad_id=1)
    assert batch["input_ids"].tolist() == [[0, 7, 2], [0, 2, 1]]
    assert batch["decoder_input_ids"].tolist() == [[0, 9, 9, 5], [0, 6, 8, 1]]
    ig = IGNORE_INDEX
    assert batch["labels"].tolist() == [[ig, ig, 5, 2], [6, 8, 2, ig]]
    assert batch["images"].shape == (2, 3, 4, 4)


def test_examples_follow_the_ofa_prompts(data: Path, tiny_model: Path) -> None:
    from ofa_vl.tokenizer import OFATokenizer

    tok = OFATokenizer.from_pretrained(tiny_model)
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id] == [0, 1, 2]
    assert tok.decode(tok.encode(" a red circle")) == "a red circle"
    by_task = {e.task: e for e in load_examples(data, "multitask")}
    assert set(by_task) == {"caption", "refcoco", "vqa", "region_caption", "itm"}
    assert by_task["caption"].prompt == " what does the image describe?"
    assert by_task["caption"].target.startswith(" ") and by_task["caption"].target.islower()
    assert by_task["refcoco"].prompt.startswith(' which region does the text " ')
    assert by_task["itm"].target in (" yes", " no")
    ds = TrainingDataset([by_task["refcoco"], by_task["region_caption"]], tok, 64)
    box = ds[0]
    assert len(box["target"]) == 4 and all(t >= tok.bin_offset for t in box["target"].tolist())
    region = tok.decode(ds[1]["input_ids"])
    assert region.startswith("what does the region describe? region") and "<bin_" in region


def test_image_cache_resizes_each_image_once(
    data: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ofa_vl import images, preprocess
    from ofa_vl.tokenizer import OFATokenizer

    tok = OFATokenizer.from_pretrained(tiny_model)
    examples = load_examples(data, "multitask")
    plain = [TrainingDataset(examples, tok, 64)[i] for i in range(len(examples))]
    # the inference preprocessing, to the bit
    assert torch.equal(plain[0]["image"], images.preprocess(examples[0].image, 64)[0])
    calls: list[Path] = []
    real = preprocess.load_resized  # what PreprocessConfig.resized calls

    def counted(path: Path, *args: Any) -> Any:
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(preprocess, "load_resized", counted)
    cached = TrainingDataset(examples, tok, 64, cache_images=True)
    cached.preload()
    paths = {e.image for e in examples}
    assert len(paths) < len(examples) and sorted(calls) == sorted(paths)
    for i, a in enumerate(plain):
        b = cached[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(calls) == len(paths)  # every item came from the cache


def test_step_sampler_shards_the_same_global_batch() -> None:
    one = list(StepSampler(40, 4, 2, 0, 1, seed=3, start_step=0, total_steps=9))
    ranks = [list(StepSampler(40, 4, 1, r, 2, seed=3, start_step=0, total_steps=9)) for r in (0, 1)]
    assert len(one) == 18 and all(len(b) == 4 for b in one)
    for step in range(9):  # micro-batch a of one process = rank a of two processes
        assert one[2 * step] == ranks[0][step] and one[2 * step + 1] == ranks[1][step]
    epoch0 = sorted(i for b in one[:10] for i in b)
    assert epoch0 == list(range(40))  # 5 steps of 8 = one epoch, each example once
    resumed = list(StepSampler(40, 4, 2, 0, 1, seed=3, start_step=4, total_steps=9))
    assert resumed == one[8:]


def test_short_run_lowers_the_loss(data: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = _args(data, tiny_model, out, "--task", "multitask", "--steps", "40", "--batch-size",
                 "8", "--lr", "3e-3", "--dropout", "0", "--save-every", "40")  # fmt: skip
    rows = train(_parse(argv))
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"], (rows[0]["loss"], rows[-1]["loss"])
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == list(range(1, 41))
    assert (out / "loss.png").stat().st_size > 0
    for f in ("model.safetensors", "tokenizer.json", "ofa_tokenizer.json", "pipeline.json"):
        assert (out / f).is_file()
    from ofa_vl.api import get_model

    pipe = get_model(out, task="caption")
    assert pipe.task.image_size == 64
    image = next((data / "val2014").iterdir())
    result = pipe(str(image))
    assert isinstance(result, dict) and isinstance(result["pred_caption"], str)


def _straight_and_stopped(
    data: Path, init: Path, tmp_path: Path, extra: tuple[str, ...]
) -> tuple[Path, Path, dict[str, Any]]:
    """A straight 6-step run, and a run that stopped after its step-3 checkpoint (the straight
    run's files up to then) with that checkpoint's state."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_parse(_args(data, init, straight, *extra)))
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000006")
    state = torch.load(resumed / "checkpoints" / "step_0000003" / STATE_FILE, weights_only=True)
    return straight, resumed, state


def test_resume_is_bit_for_bit(data: Path, tiny_model: Path, tmp_path: Path) -> None:
    extra = ("--task", "multitask", "--steps", "6", "--batch-size", "4", "--save-every", "3",
             "--dropout", "0.1", "--ema", "0.9", "--lr", "1e-3")  # fmt: skip
    straight, resumed, state = _straight_and_stopped(data, tiny_model, tmp_path, extra)
    assert state["step"] == 3 and state["ema"]
    # resumed with the image cache: the same batches, so the same weights
    rows = train(_parse(_args(data, tiny_model, resumed, *extra, "--resume", "--cache-images")))
    assert [r["step"] for r in rows] == [4, 5, 6]
    a, b = _final_weights(straight), _final_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = latest_checkpoint(resumed)
    assert ckpt is not None and ckpt.name == "step_0000006"
    raw_a = load_model(straight / "checkpoints/step_0000006").state_dict()
    raw_b = load_model(ckpt).state_dict()
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert [r["step"] for r in read_metrics(resumed / "metrics.csv")] == list(range(1, 7))


def torchrun_train(
    data: Path, init: Path, out: Path, extra: tuple[str, ...], env: dict[str, str]
) -> None:
    """``ofa train`` in 2 processes under torchrun; it must exit 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "ofa_vl.train", *_args(data, init, out, *extra)]  # fmt: skip
    run = subprocess.run(
        cmd, env={**os.environ, **env}, timeout=600, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_two_process_ddp_matches_one_process(data: Path, tiny_model: Path, tmp_path: Path) -> None:
    common = ("--task", "multitask", "--steps", "4", "--batch-size", "4", "--dropout", "0",
              "--save-every", "4", "--lr", "1e-3", "--threads", "1")  # fmt: skip
    single = tmp_path / "single"
    train(_parse(_args(data, tiny_model, single, *common, "--accum", "2")))
    ddp = tmp_path / "ddp"
    torchrun_train(data, tiny_model, ddp, common, {"OMP_NUM_THREADS": "1"})
    losses_1 = [r["loss"] for r in read_metrics(single / "metrics.csv")]
    losses_2 = [r["loss"] for r in read_metrics(ddp / "metrics.csv")]
    assert losses_1 == pytest.approx(losses_2, rel=1e-4)
    # parameters only: BatchNorm running statistics follow rank 0's micro-batches under DDP
    a = dict(load_model(single / "model.safetensors").named_parameters())
    b = dict(load_model(ddp / "model.safetensors").named_parameters())
    diff = {k: (a[k] - b[k]).abs().max().item() for k in a}
    assert all(d <= 1e-5 for d in diff.values()), {k: d for k, d in diff.items() if d > 1e-5}


def test_backbone_steps_pretrain_the_resnet_first(
    data: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _args(data, tiny_model, tmp_path / "run", "--task", "caption", "--steps", "1",
                 "--batch-size", "4", "--backbone-steps", "3", "--save-every", "1")  # fmt: skip
    rows = train(_parse(argv))
    assert "backbone step 3/3" in capsys.readouterr().err and len(rows) == 1
