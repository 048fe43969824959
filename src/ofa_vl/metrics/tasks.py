"""Each task's metric: typed results and their samples' truths -> the published numbers.

A task names its metric (:attr:`ofa_vl.tasks.base.Task.metric`); :data:`METRICS` holds them,
each with the number a validation keeps (higher is better). Values are percentages with 2
decimals, under the names of the published tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import OFAValueError
from ..tasks import Task
from ..tasks.results import CaptionResult, GroundingResult, RegionCaptionResult, Result, VQAResult
from ..tasks.samples import Sample
from .caption import as_percentages, caption_metrics
from .grounding import grounding_metrics
from .vqa import normalize_answer, vqa_acc_mmpretrain, vqa_accuracy

__all__ = ["METRICS", "MMPRETRAIN_VQA", "VQA_NOTE", "Metric", "task_metric"]

Scores = Callable[[Task, Sequence[Result], Sequence[Sample]], dict[str, float]]

MMPRETRAIN_VQA = "VQAAcc (mmpretrain)"
VQA_HUMAN_ANSWERS = 10  # per VQAv2 question
VQA_NOTE = (
    "Accuracy*: the official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py, leave-one-out); "
    f"{MMPRETRAIN_VQA}: mmpretrain's VQAAcc, the number its tools/test.py prints"
)
_CAPTION_NAMES = {  # pycocoevalcap key -> the published tables' name
    "Bleu_1": "BLEU-1",
    "Bleu_2": "BLEU-2",
    "Bleu_3": "BLEU-3",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr",
}
_NO_BOX = (0.0, 0.0, 0.0, 0.0)  # a grounding answer that is not a box: IoU 0, a miss


@dataclass(frozen=True)
class Metric:
    """A task's metric and its primary number (the one a validation keeps)."""

    primary: str
    scores: Scores


def _caption(task: Task, results: Sequence[Result], samples: Sequence[Sample]) -> dict[str, float]:
    """COCO caption metrics (pycocoevalcap) against each sample's reference captions."""
    captions = [r for r in results if isinstance(r, (CaptionResult, RegionCaptionResult))]
    preds = {s.id: r.caption for s, r in zip(samples, captions)}
    references = {s.id: list(s.truth or ()) for s in samples}
    raw = as_percentages(caption_metrics(preds, references), ndigits=2)
    return {_CAPTION_NAMES.get(k, k): v for k, v in raw.items()}


def _grounding(
    task: Task, results: Sequence[Result], samples: Sequence[Sample]
) -> dict[str, float]:
    """Acc@0.5 (OFA's rule) and mean IoU of the first box of each answer."""
    found = [r for r in results if isinstance(r, GroundingResult)]
    boxes = [r.boxes[0] if r.boxes else _NO_BOX for r in found]
    scores = grounding_metrics(boxes, [s.truth for s in samples])
    return {"Accuracy": round(100 * scores["acc"], 2), "mIoU": round(100 * scores["miou"], 2)}


def _vqa(task: Task, results: Sequence[Result], samples: Sequence[Sample]) -> dict[str, float]:
    """The official VQA accuracy (per answer type when every question has one) and mmpretrain's
    VQAAcc; with fewer than VQAv2's 10 answers a question (a folder), mmpretrain's alone."""
    answered = [r for r in results if isinstance(r, VQAResult)]
    preds = {s.id: r.answer for s, r in zip(samples, answered)}
    answers = {s.id: list(s.truth.answers) for s in samples}
    given = {s.id: s.truth.answer_type for s in samples if s.truth.answer_type}
    types = given if len(given) == len(samples) else None  # a folder's questions have no types
    if types is None and any(len(a) != VQA_HUMAN_ANSWERS for a in answers.values()):
        # the official leave-one-out needs VQAv2's 10 answers; with fewer, mmpretrain's VQAAcc:
        # each answer weighs its share of the human answers, 30 % of them is a full score
        return {"Accuracy": round(vqa_acc_mmpretrain(preds, answers), 2)}
    acc = vqa_accuracy(preds, answers, types)
    named = {"Accuracy" if k == "overall" else f"Accuracy ({k})": v for k, v in acc.items()}
    return {**named, MMPRETRAIN_VQA: round(vqa_acc_mmpretrain(preds, answers), 2)}


def _exact(task: Task, results: Sequence[Result], samples: Sequence[Sample]) -> dict[str, float]:
    """The share of answers equal to the truth, texts after VQA's answer cleaning."""
    right = [
        normalize_answer(task.answer(r)) == normalize_answer(str(s.truth))
        for s, r in zip(samples, results)
    ]
    return {"Accuracy": round(100 * sum(right) / len(right), 2)}


METRICS: dict[str, Metric] = {
    "caption": Metric("CIDEr", _caption),
    "grounding": Metric("Accuracy", _grounding),
    "vqa": Metric("Accuracy", _vqa),
    "exact": Metric("Accuracy", _exact),
}


def task_metric(task: Task | type[Task]) -> Metric:
    """The metric a task is scored with, or one clear error."""
    if task.metric not in METRICS:
        raise OFAValueError(f"task {task.name!r} has no metric to score it with")
    return METRICS[task.metric]
