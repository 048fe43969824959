"""Image classification over any label set (OFA:data/cv_data/image_classify_dataset.py,
``eval_image_classify``): every label is scored by teacher forcing under a trie over all labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import OFAValueError
from ..images import IMAGENET_MEAN, IMAGENET_STD, Interpolation
from ..preprocess import PreprocessConfig
from .base import TaskFields, register_task
from .results import ClassifyResult, Result
from .samples import Sample, column_text
from .scored import ScoringTask


def read_labels(path: str | Path) -> list[str]:
    """Label names from a text file, one per line (blank lines skipped)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise OFAValueError(f"{path}: no label names (expected one per line)")
    return names


def ranked(scores: torch.Tensor, names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` best candidates as ``{"label", "score"}``, best first."""
    top = scores.topk(min(k, scores.numel()))
    return [
        {"label": names[i], "score": float(s)} for s, i in zip(top.values, top.indices.tolist())
    ]


@register_task
@dataclass
class Classify(ScoringTask[TaskFields]):
    name = "classify"
    aliases = ("image_classify", "classification")
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)  # OFA-NOTES 2.3: ImageNet eval
    result_type = ClassifyResult
    metric = "exact"
    folder_columns = ("label",)  # a class name
    labels: Sequence[str] | str | Path | None = None  # names, or a file of names one per line
    topk: int = 5
    # OFA-NOTES 2.1: ImageNet checkpoints use timm's mean/std (--imagenet-default-mean-and-std)
    normalization: Literal["ofa", "imagenet"] = "ofa"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalization == "imagenet":
            self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def prompt(self, fields: TaskFields) -> str:
        return " what does the image describe?"  # OFA:data/cv_data/image_classify_dataset.py

    def candidates(self) -> Sequence[str]:
        """The label names (a file is read when a pipeline binds the task)."""
        if self.labels is None:
            raise OFAValueError(
                "task 'classify' needs labels=[...] or labels=<file, one name a line>"
            )
        if isinstance(self.labels, (str, Path)):
            return read_labels(self.labels)
        return list(self.labels)

    def report(self, scores: torch.Tensor, names: Sequence[str], fields: TaskFields) -> Result:
        top = ranked(scores, names, self.topk)
        return ClassifyResult(top[0]["label"], top[0]["score"], top)

    @classmethod
    def dataset_options(cls, samples: Sequence[Sample]) -> dict[str, Any]:
        """The label set: every label of the dataset's samples."""
        return {"labels": sorted({s.truth for s in samples})}

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        return {}, column_text(row, "label")

    def answer(self, result: Result) -> str:
        assert isinstance(result, ClassifyResult)
        return result.label
