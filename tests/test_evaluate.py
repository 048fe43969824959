"""``ofa test`` / ``evaluate``: predictions, metrics recomputed by hand from them, resume after
SIGKILL, torchrun sharding, and one-line errors. Runs the random golden-fixture model on a tiny
shapes world (64 px), so the plumbing is checked, not the scores."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import MMP_CKPT

from ofa_vl.api import OFAPipeline, load_answers
from ofa_vl.cli import main
from ofa_vl.evaluate import (
    METRICS,
    MMPRETRAIN_VQA,
    PREDICTIONS,
    SUBMISSION,
    EvalConfig,
    evaluate,
    format_table,
    load_benchmark,
    read_predictions,
)
from ofa_vl.metrics import (
    as_percentages,
    caption_metrics,
    load_caption_references,
    normalize_answer,
)
from ofa_vl.shapes.world import write_shapes_dataset
from ofa_vl.tasks import get_task
from ofa_vl.tokenizer import ENGLISH_BPE

# tier: the whole module runs processes or trains (pyproject markers)
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.java]

HF_DIR = ENGLISH_BPE
FAST = {"max_new_tokens": 5, "num_beams": 2}
LIMIT = 24  # VQA questions of the command's runs: 12 batches
CLI_RUN = [
    "--dataset", "vqav2", "--split", "val2014", "--limit", str(LIMIT), "--batch-size", "2",
    "--image-size", "64", "--beams", "2", "--max-new-tokens", "5",
    "--tokenizer", str(HF_DIR), "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 held-out shapes scenes in every format, plus a VQA test-dev split of two images."""
    root = tmp_path_factory.mktemp("coco")
    write_shapes_dataset(root, 0, 8, seed=0, size=64)
    questions = _json(root / "annotations/v2_OpenEnded_mscoco_val2014_questions.json")
    questions["questions"] = [q for q in questions["questions"] if q["image_id"] <= 2]
    _write(root / "annotations/v2_OpenEnded_mscoco_test-dev2015_questions.json", questions)
    (root / "test2015").mkdir()
    for i in (1, 2):
        name = f"COCO_%s_{i:012d}.jpg"
        shutil.copy(root / "val2014" / (name % "val2014"), root / "test2015" / (name % "test2015"))
    return root


@pytest.fixture(scope="module")
def pipeline(fixture_model, tokenizer) -> Callable[..., OFAPipeline]:
    """The (already loaded) fixture model at 64 px for a task."""

    def make(task: str, name: str = "fixture", **options: Any) -> OFAPipeline:
        return OFAPipeline(fixture_model, tokenizer, get_task(task, image_size=64, **options), name)

    return make


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _by_id(out: Path) -> dict[int, dict[str, Any]]:
    records = read_predictions(out / PREDICTIONS)
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records), "duplicate ids"
    return by_id


def _gt_boxes(root: Path, split: str) -> dict[int, list[float]]:
    """sent_id -> XYXY box, read straight from the REFER pickle and the COCO instances."""
    refs = pickle.loads((root / "refcoco/refs(unc).p").read_bytes())
    anns = {a["id"]: a["bbox"] for a in _json(root / "refcoco/instances.json")["annotations"]}
    boxes = {}
    for ref in refs:
        if ref["split"] == split:
            x, y, w, h = anns[ref["ann_id"]]
            boxes.update({s["sent_id"]: [x, y, x + w, y + h] for s in ref["sentences"]})
    return boxes


def _iou(a: list[float], b: list[float]) -> tuple[float, bool]:
    """IoU, and OFA's hit rule (IoU with +1e-6 >= 0.5 and a positive overlap)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hit = w > 0 and h > 0 and inter / (union + 1e-6) >= 0.5
    return (inter / union if union > 0 else 0.0), hit


def _grounding_by_hand(by_id: dict[int, Any], gt: dict[int, list[float]]) -> dict[str, float]:
    """Acc@0.5 and mean IoU, x100; an answer that is not a box scores 0."""
    boxes = {i: r["pred_bboxes"][0] if r["pred_bboxes"] else [0.0] * 4 for i, r in by_id.items()}
    scores = [_iou(box, gt[i]) for i, box in boxes.items()]
    return {
        "Accuracy": round(100 * sum(hit for _, hit in scores) / len(scores), 2),
        "mIoU": round(100 * sum(iou for iou, _ in scores) / len(scores), 2),
    }


class _HalfMeteor:
    """METEOR at 0.5 for every image: the real one starts a 17 s JVM (test_metrics covers it)."""

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        return 0.5, [0.5] * len(res)


def test_caption_metrics_equal_those_of_the_written_predictions(
    data, pipeline, tmp_path, monkeypatch
):
    from pycocoevalcap.meteor import meteor

    monkeypatch.setattr(meteor, "Meteor", _HalfMeteor)
    result = evaluate(
        pipeline("caption"),
        EvalConfig("coco-caption", data, "val", out=tmp_path, workers=1, generation=FAST),
    )
    by_id = _by_id(tmp_path)
    karpathy = _json(data / "annotations/coco_karpathy_val.json")
    assert list(by_id) == [int(e["image"][-16:-4]) for e in karpathy]  # one per image, in order
    refs = load_caption_references(data / "annotations/coco_karpathy_val_gt.json")
    raw = caption_metrics({i: r["pred_caption"] for i, r in by_id.items()}, refs)
    names = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert result.metrics == dict(zip(names, as_percentages(raw, 2).values()))
    assert result.metrics["METEOR"] == 50.0
    assert _json(tmp_path / METRICS) == result.to_dict()
    assert result.samples == 8 and result.settings["max_new_tokens"] == 5


def test_grounding_metrics_equal_those_of_the_written_predictions(
    data, pipeline, tokenizer, tmp_path
):
    bins = (tokenizer.bin_offset, tokenizer.bin_offset + tokenizer.num_bins)  # boxes, not words
    gen = {**FAST, "constraint_range": bins}
    result = evaluate(
        pipeline("refcoco"),
        EvalConfig("refcoco", data, "testA", out=tmp_path, workers=0, generation=gen),
    )
    by_id = _by_id(tmp_path)
    gt = _gt_boxes(data, "testA")
    assert set(by_id) == set(gt) and all(len(r["pred_bboxes"]) == 1 for r in by_id.values())
    assert result.metrics == _grounding_by_hand(by_id, gt)


def test_resume_scores_hand_written_predictions(data, pipeline, tmp_path):
    """Predictions on disk are not recomputed: two hits, a near miss and a non-box answer. The
    table sets them beside the published numbers of the model named."""
    gt = _gt_boxes(data, "testA")
    ids = sorted(gt)[:4]
    x0, y0, x1, y1 = gt[ids[1]]
    boxes = [[*gt[ids[0]]], [x0, y0, x0 + (x1 - x0) / 2, y1], [], [*gt[ids[3]]]]  # 1, 0.5, 0, 1
    lines = [{"id": i, "pred_bboxes": [b] if b else [], "text": "?"} for i, b in zip(ids, boxes)]
    (tmp_path / PREDICTIONS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    pipe = pipeline("refcoco", name="ofa-base_3rdparty-finetuned_refcoco")
    result = evaluate(
        pipe, EvalConfig("refcoco", data, "testA", out=tmp_path, limit=4, resume=True)
    )
    assert result.metrics == {"Accuracy": 50.0, "mIoU": 62.5}
    assert result.metrics == _grounding_by_hand(_by_id(tmp_path), gt)
    assert result.reference == {"Accuracy": 90.49}  # zoo: "Accuracy (testA)"
    rows = [line.split() for line in format_table(result).splitlines()]
    assert ["Accuracy", "50.00", "90.49"] in rows and ["mIoU", "62.50", "-"] in rows
    assert len(read_predictions(tmp_path / PREDICTIONS)) == 4


@pytest.mark.parametrize(
    ("dataset", "refs"), [("refcoco+", "refs(unc).p"), ("refcocog", "refs(umd).p")]
)
def test_refcoco_variants_read_their_own_folder(data, tmp_path, dataset, refs):
    root = tmp_path / "coco"
    (root / dataset).mkdir(parents=True)
    (root / "train2014").symlink_to(data / "train2014")
    shutil.copy(data / "refcoco/instances.json", root / dataset / "instances.json")
    shutil.copy(data / "refcoco/refs(unc).p", root / dataset / refs)
    bench = load_benchmark(dataset, root, "val")
    assert [s.id for s in bench.samples] == sorted(_gt_boxes(data, "val"))
    assert bench.task == "refcoco"


@pytest.fixture
def answers(data: Path) -> list[str]:
    return load_answers(data / "annotations/answer_list.json")


def test_vqa_accuracy_equals_that_of_the_written_predictions(data, pipeline, answers, tmp_path):
    pipe = pipeline("vqa", answers=answers)  # decoding constrained to the answer list
    result = evaluate(
        pipe,
        EvalConfig("vqav2", data, "val2014", out=tmp_path, limit=24, workers=0, generation=FAST),
    )
    by_id = _by_id(tmp_path)
    ann_file = data / "annotations/v2_mscoco_val2014_annotations.json"
    ann = {a["question_id"]: a for a in _json(ann_file)["annotations"]}
    assert len(by_id) == 24 and all(r["pred_answer"] in answers for r in by_id.values())
    groups: dict[str, list[float]] = {}
    for qid, r in by_id.items():  # every question has 10 equal human answers: right or wrong
        right = 100.0 * (r["pred_answer"] == ann[qid]["answers"][0]["answer"])
        for key in ("Accuracy", f"Accuracy ({ann[qid]['answer_type']})"):
            groups.setdefault(key, []).append(right)
        # mmpretrain's VQAAcc normalises even unanimous answers: all ten weigh 1.0 >= 0.3
        same = normalize_answer(r["pred_answer"]) == normalize_answer(
            ann[qid]["answers"][0]["answer"]
        )
        groups.setdefault(MMPRETRAIN_VQA, []).append(100.0 * same)
    assert result.metrics == {k: round(sum(v) / len(v), 2) for k, v in groups.items()}
    table = format_table(result)
    assert "VQAAcc (mmpretrain)" in table and "official VQA evaluation" in table


def test_vqa_test_dev_writes_the_evalai_submission(data, pipeline, tmp_path):
    result = evaluate(
        pipeline("vqa"),
        EvalConfig("vqav2", data, "test-dev2015", out=tmp_path, workers=0, generation=FAST),
    )
    submission = _json(tmp_path / SUBMISSION)
    by_id = _by_id(tmp_path)
    assert submission == [{"question_id": i, "answer": r["pred_answer"]} for i, r in by_id.items()]
    questions = _json(data / "annotations/v2_OpenEnded_mscoco_test-dev2015_questions.json")
    assert list(by_id) == [q["question_id"] for q in questions["questions"]]
    assert result.metrics == {} and result.submission == str(tmp_path / SUBMISSION)


def test_read_predictions_drops_a_torn_last_line_only(tmp_path):
    path = tmp_path / PREDICTIONS
    path.write_text('{"id": 1, "pred_answer": "red"}\n{"id": 2, "pred_ans')
    assert read_predictions(path) == [{"id": 1, "pred_answer": "red"}]
    path.write_text('{"id": 1}\n{"id": 2, "pred_ans\n{"id": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_predictions(path)


# --------------------------------------------------------------------------- the command
def _args(data: Path, out: Path, workers: int) -> list[str]:
    """``ofa test`` on ``LIMIT`` questions, decoding over the answer list."""
    answers = data / "annotations/answer_list.json"
    args = [*CLI_RUN, "--data-root", data, "--out", out, "--workers", workers, "--answers", answers]
    return ["test", str(MMP_CKPT), *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as this process's runs


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread in this process, as in the subprocesses: bit-identical predictions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(data: Path, pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of what the command runs (DataLoader worker on)."""
    out = tmp_path_factory.mktemp("reference")
    pipe = pipeline("vqa", answers=load_answers(data / "annotations/answer_list.json"))
    with _one_thread():
        evaluate(
            pipe,
            EvalConfig(
                "vqav2",
                data,
                "val2014",
                out=out,
                limit=LIMIT,
                batch_size=2,
                workers=1,
                generation=FAST,
                progress=False,
            ),
        )
    return out


def test_resume_after_sigkill_loses_and_duplicates_nothing(data, reference, tmp_path, capsys):
    args = _args(data, tmp_path, workers=0)
    cmd = [sys.executable, "-m", "ofa_vl", *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / PREDICTIONS
    deadline = time.monotonic() + 60
    while not (path.is_file() and path.read_bytes().count(b"\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_predictions(path)
    assert 2 <= len(partial) < LIMIT
    with path.open("a") as f:  # as if the kill had come in the middle of a line
        f.write('{"id": 99999, "pred_ans')

    with _one_thread():
        assert main([*args, "--resume"]) == 0
    printed = capsys.readouterr()
    assert "Accuracy" in printed.out and "img/s" in printed.err  # the table; the progress bar
    records = read_predictions(path)
    assert records[: len(partial)] == partial
    assert [r["id"] for r in records] == [
        r["id"] for r in read_predictions(reference / PREDICTIONS)
    ]
    assert _by_id(tmp_path) == _by_id(reference)
    assert _json(tmp_path / METRICS)["metrics"] == _json(reference / METRICS)["metrics"]


def test_torchrun_two_processes_give_the_single_process_metrics(data, reference, tmp_path):
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    cmd = [sys.executable, *torchrun, "-m", "ofa_vl", *_args(data, tmp_path, workers=0)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("on vqav2 val2014") == 1  # the table, printed by rank 0 only
    assert _by_id(tmp_path) == _by_id(reference)
    assert _json(tmp_path / METRICS)["metrics"] == _json(reference / METRICS)["metrics"]


def _bad_image_root(root: Path, image: bytes | None) -> Path:
    """A Karpathy split of one image that is missing (None) or holds ``image``."""
    name = "val2014/COCO_val2014_000000000042.jpg"
    gt = {"images": [{"id": 42}], "annotations": [{"image_id": 42, "id": 1, "caption": "x"}]}
    _write(root / "annotations/coco_karpathy_val.json", [{"image": name, "caption": ["x"]}])
    _write(root / "annotations/coco_karpathy_val_gt.json", gt)
    if image is not None:
        (root / "val2014").mkdir()
        (root / name).write_bytes(image)
    return root


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no root", "data root not found"),
        ("no annotations", "coco_karpathy_test.json: file not found"),
        ("no image", "COCO_val2014_000000000042.jpg: image not found"),
        ("corrupt image", "not a readable image"),
        ("not resumed", "already holds predictions; pass --resume"),
    ],
)
def test_errors_are_one_line(data, tmp_path, capsys, case, message):
    root, split = {
        "no root": (tmp_path / "nowhere", "val"),
        "no annotations": (data, "test"),
        "no image": (_bad_image_root(tmp_path / "a", None), "val"),
        "corrupt image": (_bad_image_root(tmp_path / "b", b"not a jpeg"), "val"),
        "not resumed": (data, "val"),
    }[case]
    (tmp_path / "out").mkdir()
    if case == "not resumed":
        (tmp_path / "out" / PREDICTIONS).write_text('{"id": 1, "pred_caption": "x"}\n')
    args = ["--dataset", "coco-caption", "--data-root", root, "--split", split, "--workers", 1,
            "--tokenizer", HF_DIR, "--image-size", 64, "--out", tmp_path / "out", "--device", "cpu"]  # fmt: skip
    assert main(["test", str(MMP_CKPT), *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.rstrip("\n").split("\n")[-1].startswith("ofa: error: ") and message in err
    if case != "corrupt image":  # that one fails after the progress bar started
        assert err.count("\n") == 1


def test_resume_with_other_settings_is_refused(data, pipeline, tmp_path):
    pipe = pipeline("refcoco")
    evaluate(
        pipe,
        EvalConfig("refcoco", data, "testA", out=tmp_path, limit=2, workers=0, generation=FAST),
    )
    with pytest.raises(ValueError, match="made with other settings"):
        gen = {**FAST, "num_beams": 3}
        evaluate(
            pipe,
            EvalConfig(
                "refcoco", data, "testA", out=tmp_path, limit=3, resume=True, generation=gen
            ),
        )
    result = evaluate(
        pipe,
        EvalConfig("refcoco", data, "testA", out=tmp_path, limit=3, resume=True, generation=FAST),
    )
    assert result.samples == 3
