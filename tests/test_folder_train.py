"""``ofa train --data`` / ``ofa test --data`` on the folder format: the bundled model learns a
renamed colour vocabulary end to end, validation keeps the best weights, early stopping stops,
resume repeats the uninterrupted run, and ``ofa test`` scores a folder as by hand."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ofa_vl.checkpoints import load_model
from ofa_vl.cli import main as cli_main
from ofa_vl.config import OFAConfig
from ofa_vl.data.folder import read_folder, training_examples
from ofa_vl.data.training import build_word_tokenizer, example_texts
from ofa_vl.evaluate import METRICS, PREDICTIONS, EvalConfig, evaluate, read_predictions
from ofa_vl.lora import ADAPTER_FILE, load_adapter, lora_parameters
from ofa_vl.metrics import grounding_metrics, normalize_answer
from ofa_vl.model import OFA
from ofa_vl.model_folder import merge_adapter_files
from ofa_vl.shapes.text import COLOURS, scene_questions
from ofa_vl.shapes.world import generate_scene, render_scene, write_shapes_folder
from ofa_vl.train import BEST, BEST_FILE, STATE_FILE, add_train_args, read_metrics, train

pytestmark = [pytest.mark.slow]

BUNDLED = "ofa-tiny_shapes"
# the new vocabulary: every colour is called by the next one's name (red -> green, ...)
RENAMED = dict(zip(COLOURS, COLOURS[1:] + COLOURS[:1], strict=True))
TINY = dict(embed_dim=32, encoder_layers=1, decoder_layers=1, num_heads=2, resnet_layers=(1, 1, 1),
            resnet_width=8, max_positions=256, image_bucket_size=8)  # fmt: skip


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    return parser.parse_args(argv)


def _colour_folder(root: Path, counts: dict[str, int], seed: int = 7) -> Path:
    """Shapes scenes (128 px) with one colour question each, answered in the renamed vocabulary."""
    for split, n in counts.items():
        lines = []
        (root / split).mkdir(parents=True)
        for k in range(n):
            rng = np.random.default_rng([seed, len(split), k])
            scene = generate_scene(rng, 128)
            render_scene(scene).save(root / split / f"{k:04d}.png")
            for q in scene_questions(scene, rng):
                if q.question_type == "what color is the":
                    answers = [RENAMED[q.answer]] * 3
                    lines.append({"file_name": f"{k:04d}.png", "question": q.question,
                                  "answers": answers})  # fmt: skip
        (root / split / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def _accuracy(model: str | Path, data: Path, out: Path) -> float:
    result = evaluate(
        model,
        EvalConfig(
            "folder",
            data,
            "test",
            out=out,
            workers=0,
            progress=False,
            device="cpu",
            generation={"num_beams": 1},
        ),
    )
    return float(result.metrics["Accuracy"])


def test_the_bundled_model_learns_a_renamed_vocabulary(tmp_path: Path) -> None:
    _learn(tmp_path)


def _learn(tmp_path: Path, *extra: str) -> Path:
    """Train the bundled model on the renamed colours; check held-out accuracy and the best
    checkpoint; returns the run folder."""
    data = _colour_folder(tmp_path / "data", {"train": 96, "validation": 16, "test": 24})
    before = _accuracy(BUNDLED, data, tmp_path / "before")
    out = tmp_path / "run"
    argv = ["--data", str(data), "--init", BUNDLED, "--out", str(out), "--steps", "30",
            "--batch-size", "16", "--lr", "1e-3", "--warmup-ratio", "0.05", "--dropout", "0",
            "--workers", "0", "--no-progress", "--log-every", "5", "--save-every", "30",
            "--val-every", "10", "--val-beams", "1", "--cache-images", *extra]  # fmt: skip
    rows = train(_parse(argv))
    best = out / BEST
    if "--lora-rank" in extra:  # the run's output is an adapter: fold it into the base weights
        best = merge_adapter_files(BUNDLED, out / BEST, tmp_path / "merged")
    after = _accuracy(best, data, tmp_path / "after")
    print(
        f"\nheld-out colour questions, renamed vocabulary: accuracy {before} before, {after} after"
    )
    assert before <= 10.0 and after >= 50.0, (before, after)
    logged = [
        (r["step"], r["val_metric"]) for r in read_metrics(out / "metrics.csv") if "val_metric" in r
    ]
    best_step, best_value = max(logged, key=lambda sv: (sv[1], -sv[0]))  # the first best one
    record = json.loads((out / BEST / BEST_FILE).read_text())
    assert record == {"step": best_step, "metric": "Accuracy", "value": best_value}
    # the kept weights are the ones that scored it: ofa test on them gives the logged value
    again = evaluate(
        best,
        EvalConfig(
            "folder",
            data,
            "validation",
            out=tmp_path / "again",
            workers=0,
            progress=False,
            device="cpu",
            generation={"num_beams": 1},
        ),
    )
    assert again.metrics["Accuracy"] == best_value
    assert rows[-1]["step"] == logged[-1][0]
    return out


def test_the_bundled_model_learns_with_lora(tmp_path: Path) -> None:
    out = _learn(tmp_path, "--lora-rank", "8", "--lora-alpha", "32", "--lr", "5e-3",
                 "--activation-checkpointing")  # fmt: skip
    assert (out / ADAPTER_FILE).is_file() and not (out / "model.safetensors").exists()
    model = load_adapter(load_model(BUNDLED), out)
    trainable, total = lora_parameters(model)
    print(f"LoRA adapter: {trainable:,} of {total:,} parameters ({100 * trainable / total:.1f} %)")
    assert trainable < 0.2 * total


def _tiny(root: Path, data: Path) -> Path:
    """A fresh tiny model folder (random weights, a word vocabulary of the folder, 64 px)."""
    examples = training_examples(read_folder(data).samples)
    tok = build_word_tokenizer(example_texts(examples), num_bins=64)
    torch.manual_seed(0)
    model = OFA(OFAConfig(vocab_size=len(tok), **TINY))  # type: ignore[arg-type]
    model.init_weights(tok.bin_offset, tok.num_bins)
    from ofa_vl.checkpoints import save_pretrained

    save_pretrained(model, root / "model.safetensors")
    tok.save_pretrained(root)
    (root / "pipeline.json").write_text(json.dumps({"image_size": 64, "interpolation": "bilinear"}))
    return root


@pytest.fixture(scope="module")
def vqa_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vqa")
    write_shapes_folder(root, "vqa", (8, 1, 1), seed=3, size=64)
    return root


@pytest.fixture(scope="module")
def tiny(vqa_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("tiny"), vqa_folder)


def _tiny_args(data: Path, init: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--init", str(init), "--out", str(out), "--workers", "0",
            "--no-progress", "--log-every", "1", "--batch-size", "4", "--val-beams", "1",
            "--val-max-new-tokens", "3",
            "--dropout", "0.1", "--lr", "1e-3", *extra]  # fmt: skip


def test_early_stop_stops_after_k_validations_without_improvement(
    vqa_folder: Path, tiny: Path, tmp_path: Path
) -> None:
    # lr 0 and a frozen ResNet (BatchNorm statistics too): the weights and the metric never move
    out = tmp_path / "run"
    argv = _tiny_args(vqa_folder, tiny, out, "--steps", "20", "--lr", "0", "--freeze-resnet",
                      "--val-every", "2", "--early-stop", "2", "--save-every", "100")  # fmt: skip
    rows = train(_parse(argv))
    assert rows[-1]["step"] == 6  # validations at 2 (the best), 4 and 6 (no better): stop
    validated = [r["step"] for r in read_metrics(out / "metrics.csv") if "val_metric" in r]
    assert validated == [2, 4, 6]
    assert json.loads((out / BEST / BEST_FILE).read_text())["step"] == 2
    assert (
        out / "checkpoints" / "step_0000006" / STATE_FILE
    ).is_file()  # resumable where it stopped
    assert (out / "loss.png").stat().st_size > 0


def test_resume_with_validation_gives_the_uninterrupted_weights(
    vqa_folder: Path, tiny: Path, tmp_path: Path
) -> None:
    extra = ("--steps", "6", "--save-every", "3", "--val-every", "2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_parse(_tiny_args(vqa_folder, tiny, straight, *extra)))
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000006")
    train(_parse(_tiny_args(vqa_folder, tiny, resumed, *extra, "--resume")))
    a = load_model(straight / "model.safetensors").state_dict()
    b = load_model(resumed / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    keep = ("step", "loss", "lr", "val_metric")
    rows_a, rows_b = (
        [{k: r[k] for k in keep if k in r} for r in read_metrics(o / "metrics.csv")]
        for o in (straight, resumed)
    )
    assert rows_a == rows_b and [r["step"] for r in rows_a] == list(range(1, 7))
    assert (straight / BEST / BEST_FILE).read_text() == (resumed / BEST / BEST_FILE).read_text()


def _grounding_folder(root: Path) -> Path:
    write_shapes_folder(root, "refcoco", (0, 0, 4), seed=5, size=128)
    return root


def test_ofa_test_scores_a_folder_as_by_hand(tmp_path: Path) -> None:
    data = _grounding_folder(tmp_path / "data")
    out = tmp_path / "out"
    result = evaluate(
        BUNDLED,
        EvalConfig(
            "folder",
            data,
            None,
            out=out,
            workers=0,
            progress=False,
            device="cpu",
            generation={"num_beams": 1},
        ),
    )
    lines = [json.loads(x) for x in (data / "test" / "metadata.jsonl").read_text().splitlines()]
    records = read_predictions(out / PREDICTIONS)
    assert [r["id"] for r in records] == list(range(len(lines)))
    boxes = [r["pred_bboxes"][0] if r["pred_bboxes"] else [0.0] * 4 for r in records]
    found = grounding_metrics(boxes, [x["box"] for x in lines])
    assert result.metrics == {"Accuracy": round(100 * found["acc"], 2),
                                 "mIoU": round(100 * found["miou"], 2)}  # fmt: skip
    assert result.split == "test" and json.loads((out / METRICS).read_text()) == result.to_dict()


def _vqa_by_hand(records: list[dict[str, Any]], answers: list[list[str]]) -> float:
    """mmpretrain's VQAAcc: an answer weighs its share of the human answers, 30 % = full marks."""
    scores = []
    for r, truth in zip(records, answers, strict=True):
        share = sum(normalize_answer(a) == normalize_answer(r["pred_answer"]) for a in truth)
        scores.append(min(1.0, share / len(truth) / 0.3))
    return round(100 * sum(scores) / len(scores), 2)


@pytest.mark.multiprocess
def test_ofa_test_on_a_folder_resumes_and_shards_under_torchrun(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    write_shapes_folder(tmp_path / "src", "vqa", (0, 0, 3), seed=2, size=128)
    lines = [json.loads(x) for x in (tmp_path / "src/test/metadata.jsonl").read_text().splitlines()]
    for x in lines:  # several human answers: the asked one twice, a wrong one once
        x["answers"] = [x.pop("answer")] * 2 + ["purple"]
    for img in (tmp_path / "src/test").glob("*.jpg"):
        shutil.copy(img, data / "test" / img.name)
    (data / "test/metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    command = ["test", BUNDLED, "--data", str(data), "--beams", "1", "--batch-size", "2",
               "--workers", "0", "--device", "cpu"]  # fmt: skip
    single, shard = tmp_path / "single", tmp_path / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every process
    run = [sys.executable, "-m", "ofa_vl", *command, "--out", str(single)]
    for extra in (["--limit", "4"], ["--resume"]):
        done = subprocess.run([*run, *extra], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
    records = read_predictions(single / PREDICTIONS)
    assert [r["id"] for r in records] == list(range(len(lines)))  # the first 4 were kept
    metrics = json.loads((single / METRICS).read_text())["metrics"]
    assert metrics == {"Accuracy": _vqa_by_hand(records, [x["answers"] for x in lines])}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                "2", "-m", "ofa_vl", *command, "--out", str(shard)]  # fmt: skip
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_predictions(shard / PREDICTIONS) == records


def test_ofa_test_scores_each_task_of_a_mixed_folder(tmp_path: Path, capsys) -> None:
    """A test split of grounding and VQA lines: one table per task, each the metrics of that
    task's lines scored alone."""
    mixed = tmp_path / "mixed" / "test"
    mixed.mkdir(parents=True)
    lines: list[dict[str, Any]] = []
    for task in ("refcoco", "vqa"):
        write_shapes_folder(tmp_path / task, task, (0, 0, 2), seed=3, size=128)
        for x in map(
            json.loads, (tmp_path / task / "test/metadata.jsonl").read_text().splitlines()
        ):
            shutil.copy(
                tmp_path / task / "test" / x["file_name"], mixed / f"{task}_{x['file_name']}"
            )
            lines.append({**x, "task": task, "file_name": f"{task}_{x['file_name']}"})
    (mixed / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    argv = ["test", BUNDLED, "--data", str(tmp_path / "mixed"), "--beams", "1", "--workers", "0",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("on folder test") == 2 and "mIoU" in printed and "Accuracy" in printed
    for task in ("refcoco", "vqa"):
        alone = evaluate(
            BUNDLED,
            EvalConfig(
                "folder",
                tmp_path / task,
                None,
                out=tmp_path / f"{task}-alone",
                workers=0,
                progress=False,
                device="cpu",
                generation={"num_beams": 1},
            ),
        )
        scored = json.loads((out / task / METRICS).read_text())
        assert scored["metrics"] == alone.metrics and scored["samples"] == alone.samples
        assert all(f"{k} " in printed for k in alone.metrics)
