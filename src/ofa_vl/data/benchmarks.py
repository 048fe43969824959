"""The published benchmarks and folder datasets as what ``ofa test`` scores: one split, its
samples (:class:`~ofa_vl.tasks.samples.Sample`, each with its truth) in file order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import OFAValueError
from ..tasks import TASKS
from ..tasks.samples import Sample
from .coco_caption import CaptionSample, COCOCaption
from .common import DatasetError
from .folder import FolderData, read_folder, split_name
from .refcoco import RefCOCO, RefSample
from .vqa import VQASample, VQAv2

__all__ = ["DATASETS", "Benchmark", "folder_benchmark", "folder_tasks", "load_benchmark"]

DATASETS: dict[str, str] = {  # benchmark -> the task that answers it
    "coco-caption": "caption",
    "refcoco": "refcoco",
    "refcoco+": "refcoco",
    "refcocog": "refcoco",
    "vqav2": "vqa",
    "folder": "",  # your own data (ofa_vl.data.folder): the task is the folder's
}


@dataclass(frozen=True)
class Benchmark:
    """One split of a benchmark: the samples to predict, each with its truth."""

    name: str
    split: str
    samples: list[Sample]  # unique ids, file order, at most ``limit``
    known_ids: frozenset[int]  # every id of the split (to recognise a foreign predictions file)
    task_name: str = ""  # a folder's task (a benchmark's is in DATASETS)
    task_options: dict[str, Any] = field(default_factory=dict)  # e.g. a folder's class names

    @property
    def task(self) -> str:
        return self.task_name or DATASETS[self.name]

    @property
    def has_answers(self) -> bool:
        """False for VQA test splits (no annotations): predictions are submitted, not scored."""
        return all(s.truth is not None for s in self.samples)


def load_benchmark(
    name: str,
    data_root: str | Path,
    split: str,
    limit: int | None = None,
    object_tags: str | Path | None = None,
) -> Benchmark:
    """Read a benchmark split laid out as mmpretrain's configs expect (see :mod:`ofa_vl.data`).

    Samples with an id seen before are dropped (the Karpathy train file lists an image once per
    caption); the images of the first ``limit`` samples must exist. COCO captions are scored
    against the ``_gt.json`` references.
    """
    root = Path(data_root)
    if name == "folder":
        return folder_benchmark(read_folder(root), split, limit=limit)
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found (the folder mmpretrain calls data/coco)")
    references: dict[int, list[str]] | None = None
    reader: COCOCaption | RefCOCO | VQAv2
    if name == "coco-caption":
        reader = COCOCaption(root, split, check_images="lazy")
        references = reader.references()
    elif name == "vqav2":
        reader = VQAv2(root, split, object_tags=object_tags, check_images="lazy")
    elif name in DATASETS:
        reader = RefCOCO(root, name, split, check_images="lazy")
    else:
        raise OFAValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    first: dict[int, int] = {}  # id -> index of its first sample
    records: Sequence[CaptionSample | RefSample | VQASample] = reader.samples
    for i, record in enumerate(records):
        first.setdefault(record.sample().id, i)
    chosen = list(first.values())[:limit]
    samples = [reader[i].sample() for i in chosen]  # lazy readers check the image here
    if references is not None:
        samples = [replace(s, truth=tuple(references.get(s.id, ()))) for s in samples]
    return Benchmark(name, split, samples, frozenset(first))


def folder_tasks(data: FolderData, split: str | None = None) -> tuple[str, list[str]]:
    """The split of a folder dataset that is scored (``split``, else the first of test,
    validation, train it has) and the tasks of its lines."""
    if split is None:
        split = next(s for s in ("test", "validation", "train") if s in data.splits)
    split = split_name(split)
    if split not in data.splits:
        raise DatasetError(f"{data.root}: no {split!r} split (it has {', '.join(data.splits)})")
    return split, sorted({s.task for s in data.select(split)})


def folder_benchmark(
    data: FolderData, split: str | None = None, task: str | None = None, limit: int | None = None
) -> Benchmark:
    """One split and task of a folder dataset (:mod:`ofa_vl.data.folder`) as a benchmark.

    ``split`` defaults to the first of test, validation, train the folder has; ``task`` to the
    split's only task; the task options its lines settle (a classifier's labels) come with it.
    """
    split, tasks = folder_tasks(data, split)
    if task is None and len(tasks) > 1:
        raise OFAValueError(
            f"{data.root}: the {split} split mixes the tasks {', '.join(tasks)}; choose one"
        )
    task = task or tasks[0]
    chosen = data.select(split, task)
    if not chosen:
        raise DatasetError(f"{data.root}: no {task!r} lines in the {split} split")
    options = TASKS[task].dataset_options([s for s in data.samples if s.task == task])
    known = frozenset(s.id for s in chosen)
    return Benchmark("folder", split, chosen[:limit], known, task, options)
