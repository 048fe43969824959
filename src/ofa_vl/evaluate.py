"""``ofa test``: batched, resumable, optionally distributed evaluation on the published benchmarks.

After mmpretrain's ``tools/test.py`` (one command, dataset + metric from the model's task) and
OFA's ``evaluate.py`` (torchrun shards, results gathered on rank 0), with one addition: every
prediction reaches ``OUT/predictions.jsonl`` as soon as its batch is done, so a killed run goes on
where it stopped.

Design:
  * The selected samples (file order, ``limit`` first ones) are cut into fixed batches of
    ``batch_size``; samples already in ``predictions.jsonl`` are dropped from their batch. Batch
    ``k`` goes to rank ``k % world_size``, so every batch holds the same samples whatever the
    number of processes, and so does every prediction.
  * Images are loaded and resized at the task's size in DataLoader workers; the pipeline's
    :meth:`~ofa_vl.api.OFAPipeline.predict_batch` runs the model.
  * Only rank 0 touches ``OUT``: after each round (one batch per rank) the ranks'
    predictions are gathered on it and appended as one JSON line each, flushed and fsynced.
  * Metrics are computed on rank 0 from ``predictions.jsonl`` in dataset order, so a resumed or
    distributed run scores exactly as one uninterrupted process.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .api import OFAPipeline, get_model
from .data import (
    CaptionSample,
    COCOCaption,
    DatasetError,
    RefCOCO,
    RefSample,
    VQASample,
    VQAv2,
    write_vqa_submission,
)
from .data.folder import FolderData, FolderSample, read_folder, split_name
from .distributed import Dist, init_distributed, resolve_device
from .errors import OFAError, OFARuntimeError, OFAValueError, describe
from .formats import coco_entries
from .images import ImageError, ImageInfo
from .metrics import (
    as_percentages,
    caption_metrics,
    grounding_metrics,
    normalize_answer,
    vqa_acc_mmpretrain,
    vqa_accuracy,
)
from .options import at_least, check_counts, check_image_size
from .preprocess import PreprocessConfig
from .runs import RunLock, weights_fingerprint, write_atomic
from .zoo import MODELS

__all__ = [
    "DATASETS",
    "Benchmark",
    "evaluate",
    "evaluate_command",
    "folder_benchmark",
    "folder_tasks",
    "format_table",
    "load_benchmark",
    "read_predictions",
    "sample_fields",
    "sample_id",
    "score",
]

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
COCO_RESULTS = "coco_results.json"
COCO_TASKS = ("caption", "refcoco")  # the tasks whose answers COCO results hold
SUBMISSION = "vqa_submission.json"
RUN_SETTINGS = "settings.json"
DATASETS: dict[str, str] = {  # benchmark -> the task that answers it
    "coco-caption": "caption",
    "refcoco": "refcoco",
    "refcoco+": "refcoco",
    "refcocog": "refcoco",
    "vqav2": "vqa",
    "folder": "",  # your own data (ofa_vl.data.folder): the task is the folder's
}
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

Sample = CaptionSample | RefSample | VQASample | FolderSample


def sample_id(sample: Sample) -> int:
    """The stable key of a prediction: COCO image id, RefCOCO sent_id or VQA question_id."""
    if isinstance(sample, CaptionSample):
        return sample.image_id
    if isinstance(sample, (RefSample, FolderSample)):
        return sample.sample_id
    return sample.question_id


def sample_fields(sample: Sample) -> dict[str, Any]:
    """The task's text fields for one sample."""
    if isinstance(sample, RefSample):
        return {"text": sample.text}
    if isinstance(sample, VQASample):
        return {"question": sample.question, "objects": sample.objects}
    if isinstance(sample, FolderSample) and sample.task == "region_caption":
        return {"region": list(sample.box or ())}
    if isinstance(sample, FolderSample) and sample.task == "itm":
        return {"text": sample.captions[0]}
    if isinstance(sample, FolderSample) and sample.task == "ask":
        return {"prompt": sample.prompt}
    return {}


@dataclass(frozen=True)
class Benchmark:
    """One split of a benchmark: the samples to predict and what scoring them needs."""

    name: str
    split: str
    samples: list[Sample]  # unique ids, file order, at most ``limit``
    known_ids: frozenset[int]  # every id of the split (to recognise a foreign predictions file)
    references: dict[int, list[str]] | None = None  # caption ground truth (``_gt.json``)
    task_name: str = ""  # a folder's task (a benchmark's is in DATASETS)
    task_options: dict[str, Any] = field(default_factory=dict)  # e.g. a folder's class names

    @property
    def task(self) -> str:
        return self.task_name or DATASETS[self.name]

    @property
    def has_answers(self) -> bool:
        """False for VQA test splits (no annotations): predictions are submitted, not scored."""
        return not any(isinstance(s, VQASample) and s.answers is None for s in self.samples)


def load_benchmark(
    name: str,
    data_root: str | Path,
    split: str,
    limit: int | None = None,
    object_tags: str | Path | None = None,
) -> Benchmark:
    """Read a benchmark split laid out as mmpretrain's configs expect (see :mod:`ofa_vl.data`).

    Samples with an id seen before are dropped (the Karpathy train file lists an image once per
    caption); the images of the first ``limit`` samples must exist.
    """
    root = Path(data_root)
    if name == "folder":
        return folder_benchmark(read_folder(root), split, limit=limit)
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found (the folder mmpretrain calls data/coco)")
    references = None
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
    for i in range(len(reader)):
        first.setdefault(sample_id(reader.samples[i]), i)
    chosen = list(first.values())[:limit]
    samples: list[Sample] = [reader[i] for i in chosen]  # lazy readers check the image here
    return Benchmark(name, split, samples, frozenset(first), references)


def _as_benchmark_sample(s: FolderSample) -> Sample:
    """A folder sample as the benchmark sample of its task (scored by the same code)."""
    if s.task == "caption":
        return CaptionSample(s.sample_id, s.image_path, list(s.captions))
    if s.task == "refcoco":
        assert s.box is not None
        return RefSample(s.sample_id, s.image_path, s.text, s.box, s.sample_id, s.sample_id)
    if s.task == "vqa":
        return VQASample(s.sample_id, s.sample_id, s.image_path, s.question, list(s.answers),
                         None, None)  # fmt: skip
    return s


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
    split's only task.
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
    samples = [_as_benchmark_sample(s) for s in chosen[:limit]]
    references = {s.sample_id: list(s.captions) for s in chosen if s.captions}
    labels = sorted({s.label for s in data.samples if s.task == "classify"})
    options: dict[str, Any] = {"labels": labels} if task == "classify" else {}
    known = frozenset(s.sample_id for s in chosen)
    return Benchmark("folder", split, samples, known, references or None, task, options)


MMPRETRAIN_VQA = "VQAAcc (mmpretrain)"
VQA_HUMAN_ANSWERS = 10  # per VQAv2 question
VQA_NOTE = (
    "Accuracy*: the official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py, leave-one-out); "
    f"{MMPRETRAIN_VQA}: mmpretrain's VQAAcc, the number its tools/test.py prints"
)


# folder tasks scored by exact match: task -> (result key, the sample's answer)
_EXACT: dict[str, tuple[str, Any]] = {
    "itm": ("match", lambda s: s.label == "yes"),
    "classify": ("pred_label", lambda s: s.label),
    "ask": ("text", lambda s: s.target),
}


def _same(predicted: Any, truth: Any) -> bool:
    """Exact match; texts after :func:`~ofa_vl.metrics.normalize_answer` (VQA's answer cleaning)."""
    if isinstance(truth, str):
        return normalize_answer(str(predicted)) == normalize_answer(truth)
    return bool(predicted == truth)


def score(bench: Benchmark, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Published metrics (percentages, 2 decimals) of ``records``, aligned with the samples."""
    samples = bench.samples
    if bench.task in ("caption", "region_caption"):
        assert bench.references is not None
        preds = {sample_id(s): str(r["pred_caption"]) for s, r in zip(samples, records)}
        raw = as_percentages(caption_metrics(preds, bench.references), ndigits=2)
        return {_CAPTION_NAMES.get(k, k): v for k, v in raw.items()}
    if bench.task == "refcoco":
        boxes = [r["pred_bboxes"][0] if r["pred_bboxes"] else _NO_BOX for r in records]
        gt = [s.gt_box for s in samples if isinstance(s, RefSample)]
        found = grounding_metrics(boxes, gt)
        return {"Accuracy": round(100 * found["acc"], 2), "mIoU": round(100 * found["miou"], 2)}
    if bench.task in _EXACT:
        key, truth = _EXACT[bench.task]
        folder = [s for s in samples if isinstance(s, FolderSample)]
        right = [_same(r[key], truth(s)) for s, r in zip(folder, records)]
        return {"Accuracy": round(100 * sum(right) / len(right), 2)}
    vqa = [s for s in samples if isinstance(s, VQASample)]
    answers = {s.question_id: s.answers or [] for s in vqa}
    given = {s.question_id: s.answer_type for s in vqa if s.answer_type}
    types = given if len(given) == len(vqa) else None  # a folder's questions have no types
    preds = {s.question_id: str(r["pred_answer"]) for s, r in zip(vqa, records)}
    if bench.name == "folder" and any(len(a) != VQA_HUMAN_ANSWERS for a in answers.values()):
        # the official leave-one-out needs VQAv2's 10 answers; with fewer, mmpretrain's VQAAcc:
        # each answer weighs its share of the human answers, 30 % of them is a full score
        return {"Accuracy": round(vqa_acc_mmpretrain(preds, answers), 2)}
    acc = vqa_accuracy(preds, answers, types)
    named = {"Accuracy" if k == "overall" else f"Accuracy ({k})": v for k, v in acc.items()}
    return {**named, MMPRETRAIN_VQA: round(vqa_acc_mmpretrain(preds, answers), 2)}


# --------------------------------------------------------------------------- predictions file
def _scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a predictions file and the byte length of its complete lines."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a kill mid-write leaves a last line without its newline
    records = []
    for n, line in enumerate(data[:end].splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("id"), int)):
            raise OFAValueError(f"{path}: line {n} is not a prediction record ({line[:60]!r})")
        records.append(record)
    return records, end


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``predictions.jsonl`` in file order, a torn last line left out."""
    return _scan(Path(path))[0]


def _prepare_output(out: Path, resume: bool, bench: Benchmark) -> set[int]:
    """Check ``out`` for this run, cut a torn last line, and return the ids already predicted."""
    path = out / PREDICTIONS
    records, end = _scan(path)
    if path.is_file() and path.stat().st_size and not resume:
        raise OFAValueError(
            f"{path} already holds predictions; pass --resume to continue that run or choose "
            "another --out"
        )
    ids = [r["id"] for r in records]
    foreign = set(ids) - bench.known_ids
    if foreign:
        raise OFAValueError(
            f"{path} holds predictions for ids not in {bench.name} {bench.split} (e.g. "
            f"{sorted(foreign)[:3]}); choose another --out"
        )
    if len(set(ids)) != len(ids):
        raise OFAValueError(
            f"{path} holds the same id twice (written by two runs at once?); choose another --out"
        )
    with path.open("ab") as f:  # creates it; drops a torn last line
        f.truncate(end)
    return set(ids)


def _append(sink: IO[str], records: Sequence[Mapping[str, Any]]) -> None:
    sink.write("".join(json.dumps(r) + "\n" for r in records))
    sink.flush()
    os.fsync(sink.fileno())


# --------------------------------------------------------------------------- data loading
_Item = tuple[int, torch.Tensor, ImageInfo]
_Batch = tuple[list[int], torch.Tensor, list[ImageInfo]]


class _Images(Dataset[_Item | ImageError]):
    """Sample index -> its image preprocessed as the task wants (run in DataLoader workers: they
    get the pipeline's :class:`PreprocessConfig`, not the pipeline and its network)."""

    def __init__(self, paths: Sequence[Path], preprocessing: PreprocessConfig) -> None:
        self.paths, self.preprocessing = paths, preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Item | ImageError:
        try:
            pixels, info = self.preprocessing.image(self.paths[index])
        except (ImageError, OSError) as e:  # returned, not raised: a worker would add its traceback
            return ImageError(str(e))
        return index, pixels, info


def _collate(items: list[_Item | ImageError]) -> _Batch | ImageError:
    errors = [it for it in items if isinstance(it, ImageError)]
    if errors:
        return errors[0]
    good = [it for it in items if not isinstance(it, ImageError)]
    return [i for i, _, _ in good], torch.stack([p for _, p, _ in good]), [f for _, _, f in good]


def _batches(ids: Sequence[int], batch_size: int, done: set[int]) -> list[list[int]]:
    """Fixed batches of sample indices, done samples left out, empty batches dropped."""
    cut = (range(k, min(k + batch_size, len(ids))) for k in range(0, len(ids), batch_size))
    return [b for b in ([i for i in r if ids[i] not in done] for r in cut) if b]


# --------------------------------------------------------------------------- the runner
def evaluate(
    model: OFAPipeline | str | Path,
    dataset: str | Benchmark,
    data_root: str | Path | None = None,
    split: str | None = None,
    *,
    task: str | None = None,
    strict: bool = False,
    out: str | Path | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    resume: bool = False,
    workers: int = 2,
    device: str | torch.device | None = None,
    pretrained: str | Path | None = None,
    tokenizer: str | Path | None = None,
    object_tags: str | Path | None = None,
    generation: Mapping[str, Any] | None = None,
    progress: bool = True,
    coco_results: bool = False,
    **task_options: Any,
) -> dict[str, Any]:
    """Predict every sample of a benchmark split and score the predictions.

    Args:
        model: a pipeline, or a zoo name / checkpoint for :func:`~ofa_vl.api.get_model` (with
            ``pretrained``, ``tokenizer``, ``device`` and ``task_options`` such as
            ``image_size`` or ``answers``).
        dataset: one of :data:`DATASETS`; ``data_root`` holds it in mmpretrain's layout, or
            ``"folder"``: your own data (:mod:`ofa_vl.data.folder`), ``split`` and ``task``
            picking the part to score (default: its test split, its task), ``strict`` refusing
            bad lines; or a :class:`Benchmark` already read.
        out: the run's folder (default ``ofa-test/<model>_<dataset>_<split>``).
        limit: evaluate the first ``limit`` samples only.
        resume: continue the run whose ``predictions.jsonl`` is in ``out``.
        workers: DataLoader worker processes decoding images (0: in this process).
        object_tags: VinVL object tags for VQA (:func:`~ofa_vl.data.load_object_tags`).
        generation: decoding overrides (``num_beams``, ``max_new_tokens``, ...).
        coco_results: also write ``out/coco_results.json`` (captions or boxes,
            :mod:`ofa_vl.formats`), for ``COCO.loadRes`` and the COCO evaluation server.

    Returns:
        What ``out/metrics.json`` holds: ``{"model", "dataset", "split", "samples",
        "settings", "metrics", "reference", "predictions"[, "submission"]}``. Under torchrun,
        every rank gets it.
    """
    check_counts(batch_size=batch_size, limit=limit)
    at_least("workers", workers, 0)
    if isinstance(model, OFAPipeline) and (pretrained or tokenizer or device or task_options):
        raise OFAValueError("pretrained, tokenizer, device and task options need a model name")
    dev = model.device if isinstance(model, OFAPipeline) else resolve_device(device)
    ranks, created = init_distributed(dev)
    try:
        bench = _read_benchmark(dataset, data_root, split, task, strict, limit, object_tags, ranks)
        if coco_results and bench.task not in COCO_TASKS:
            raise OFAValueError(f"COCO results hold captions and boxes, not {bench.task!r} answers")
        name = model.name if isinstance(model, OFAPipeline) else str(model)
        where = Path(data_root).name if bench.name == "folder" and data_root else bench.name
        out = Path(out or _default_out(name, where, bench.split))
        with ExitStack() as held:  # rank 0 holds the run folder's lock until the run ends
            done = _resume_point(out, resume, bench, ranks, held)
            if isinstance(model, OFAPipeline):
                pipe = model
            else:
                pipe = get_model(
                    model, pretrained, device=dev, tokenizer=tokenizer, task=bench.task,
                    **{**bench.task_options, **task_options},
                )  # fmt: skip
            if pipe.task.name != bench.task:
                raise OFAValueError(
                    f"{bench.name} needs a {bench.task!r} model, got a {pipe.task.name!r} one"
                )
            check_image_size(pipe.task.image_size, pipe.model.cfg)
            overrides = dict(generation or {})
            _check_settings(out, _settings(pipe, overrides), bool(done), ranks)
            _predict(pipe, bench, out, done, ranks, batch_size, workers, overrides, progress)
            result = _finish(pipe, bench, out, overrides, coco_results) if ranks.rank == 0 else None
            result = ranks.broadcast(result)
            assert result is not None
            return result
    finally:
        if created:
            dist.destroy_process_group()


def _default_out(model: str, where: str, split: str) -> Path:
    return Path("ofa-test") / f"{Path(model).stem}_{where}_{split}"


def _read_benchmark(
    dataset: str | Benchmark,
    data_root: str | Path | None,
    split: str | None,
    task: str | None,
    strict: bool,
    limit: int | None,
    object_tags: str | Path | None,
    ranks: Dist,
) -> Benchmark:
    """The samples :func:`evaluate` scores; rank 0 reports a folder's skipped lines."""
    if isinstance(dataset, Benchmark):
        return dataset
    if dataset not in DATASETS:
        raise OFAValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if data_root is None or (split is None and dataset != "folder"):
        raise OFAValueError(f"{dataset} needs a data root and a split")
    if dataset != "folder":
        return load_benchmark(dataset, data_root, str(split), limit, object_tags)
    data = read_folder(data_root, task, strict)
    if ranks.rank == 0:
        data.report()
    return folder_benchmark(data, split, task, limit)


def _resume_point(
    out: Path, resume: bool, bench: Benchmark, ranks: Dist, held: ExitStack
) -> set[int]:
    """Rank 0 locks ``out`` (into ``held``), reads the ids already predicted and readies the file;
    every rank gets the ids, or the failure."""
    done: set[int] = set()
    error: OFAError | OSError | None = None
    if ranks.rank == 0:
        try:
            held.enter_context(RunLock(out, "ofa test"))
            done = _prepare_output(out, resume, bench)
        except (OFAError, OSError) as e:
            error = e
    done, failure = ranks.broadcast((done, None if error is None else describe(error)))
    if error is not None:
        raise error
    if failure is not None:  # rank 0's, on the other ranks
        raise OFARuntimeError(failure)
    return done


def _settings(pipe: OFAPipeline, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that decides a prediction: preprocessing and decoding."""
    task = pipe.task
    weights = pipe.model.weights_file
    return {
        "model": pipe.name,
        "weights": weights_fingerprint(weights) if weights is not None else None,
        "image_size": task.image_size,
        "interpolation": task.interpolation,
        "precision": pipe.precision,
        "backend": pipe.backend,
        **pipe.decoding(**overrides).to_dict(),
    }


def _check_settings(out: Path, settings: dict[str, Any], resuming: bool, ranks: Dist) -> None:
    """Rank 0 records the run's settings; a resumed run must use the same ones."""
    failure: str | None = None
    if ranks.rank == 0:
        path = out / RUN_SETTINGS
        want = json.loads(json.dumps(settings))  # as JSON would store it
        if resuming and path.is_file() and (old := json.loads(path.read_text())) != want:
            diff = {
                k: (old.get(k), want.get(k)) for k in {*old, *want} if old.get(k) != want.get(k)
            }
            failure = (
                f"{out}: the predictions there were made with other settings {diff} "
                "(old, new); resume with the same settings or use another --out"
            )
        else:
            write_atomic(path, json.dumps(want, indent=2) + "\n")
    if (failure := ranks.broadcast(failure)) is not None:
        raise OFAValueError(failure)


def _predict(
    pipe: OFAPipeline,
    bench: Benchmark,
    out: Path,
    done: set[int],
    ranks: Dist,
    batch_size: int,
    workers: int,
    overrides: Mapping[str, Any],
    progress: bool,
) -> None:
    """Predict the samples not ``done``, this rank's batches; rank 0 appends every rank's."""
    ids = [sample_id(s) for s in bench.samples]
    batches = _batches(ids, batch_size, done)
    mine = batches[ranks.rank :: ranks.world]
    paths = [s.image_path for s in bench.samples]
    images = _Images(paths, pipe.task.preprocessing)
    loader = iter(DataLoader(images, batch_sampler=mine, num_workers=workers, collate_fn=_collate))
    main = ranks.rank == 0
    bar = tqdm(total=len(ids), initial=len(ids) - sum(map(len, batches)), unit="img",
               disable=not (main and progress), desc=f"{bench.name} {bench.split}")  # fmt: skip
    sink = (out / PREDICTIONS).open("a", encoding="utf-8") if main else None
    try:
        for step in range(math.ceil(len(batches) / ranks.world)):
            records: list[dict[str, Any]] = []
            if step < len(mine):
                batch = next(loader)
                if isinstance(batch, ImageError):
                    raise batch
                index, pixels, infos = batch
                fields = [sample_fields(bench.samples[i]) for i in index]
                results = pipe.predict_batch(pixels, infos, fields, **overrides)
                records = [
                    {"id": ids[i], **r.to_dict(), "confidence": r.confidence}
                    for i, r in zip(index, results)
                ]
            gathered = [r for part in ranks.gather(records) for r in part]
            if sink is not None:
                _append(sink, gathered)
                bar.update(len(gathered))
    finally:
        del loader  # its workers stop now, not when a raised error's frames are collected
        bar.close()
        if sink is not None:
            sink.close()


def _finish(
    pipe: OFAPipeline,
    bench: Benchmark,
    out: Path,
    overrides: Mapping[str, Any],
    coco_results: bool = False,
) -> dict[str, Any]:
    """Rank 0: score ``predictions.jsonl``, write ``metrics.json`` (and the VQA submission)."""
    by_id = {r["id"]: r for r in read_predictions(out / PREDICTIONS)}
    records = [by_id[sample_id(s)] for s in bench.samples]
    card = MODELS.get(pipe.name)
    result: dict[str, Any] = {
        "model": pipe.name,
        "dataset": bench.name,
        "split": bench.split,
        "samples": len(records),
        "settings": _settings(pipe, overrides),
        "metrics": {},
        "reference": {},
        "predictions": str(out / PREDICTIONS),
    }
    if bench.has_answers:
        result["metrics"] = score(bench, records)
        published = card.metrics if card else {}  # "Accuracy (testA)" or "Accuracy", ...
        found = {
            k: published.get(f"{k} ({bench.split})", published.get(k)) for k in result["metrics"]
        }
        result["reference"] = {k: v for k, v in found.items() if v is not None}
    else:
        answers = {r["id"]: str(r["pred_answer"]) for r in records}
        result["submission"] = str(write_vqa_submission(answers, out / SUBMISSION))
    if coco_results:
        result["coco_results"] = str(_write_coco(bench, records, out / COCO_RESULTS))
    write_atomic(out / METRICS, json.dumps(result, indent=2) + "\n")
    return result


def _write_coco(bench: Benchmark, records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The predictions as COCO results: per sample its image id (and RefCOCO's category)."""
    entries = []
    for sample, record in zip(bench.samples, records):
        image_id = getattr(sample, "image_id", sample_id(sample))
        entries += coco_entries(record, image_id, getattr(sample, "category_id", None))
    write_atomic(path, json.dumps(entries))
    return path


def format_table(result: Mapping[str, Any]) -> str:
    """The metrics of :func:`evaluate` beside the model's published numbers, as text."""
    head = (
        f"{result['model']} on {result['dataset']} {result['split']} ({result['samples']} samples)"
    )
    lines = [head]
    if result["metrics"]:
        width = max(len(k) for k in result["metrics"]) + 2
        lines.append(f"{'metric':<{width}}{'value':>8}{'reference':>11}")
        for key, value in result["metrics"].items():
            ref = result["reference"].get(key)
            lines.append(f"{key:<{width}}{value:>8.2f}{'-' if ref is None else f'{ref:.2f}':>11}")
    if MMPRETRAIN_VQA in result["metrics"]:
        lines.append(VQA_NOTE)
    if "submission" in result:
        lines.append(f"no annotations for this split; EvalAI submission: {result['submission']}")
    lines.append(f"predictions: {result['predictions']}")
    return "\n".join(lines)


def evaluate_command(model: str, **kwargs: Any) -> dict[str, Any]:
    """``ofa test MODEL --dataset ...``: :func:`evaluate`, then rank 0 prints the table.

    A folder whose split mixes tasks (``--data`` without ``--task``) is scored task by task, each
    into ``OUT/<task>`` with its own table; the results are returned by task."""
    main = int(os.environ.get("RANK", "0")) == 0
    mixed = _mixture(kwargs)
    if mixed is None:
        result = evaluate(model, **kwargs)
        if main:
            print(format_table(result))
        return result
    split, tasks = mixed
    where = Path(str(kwargs["data_root"])).name
    base = Path(kwargs.get("out") or _default_out(model, where, split))
    results: dict[str, Any] = {}
    for task in tasks:
        results[task] = evaluate(model, **{**kwargs, "task": task, "out": base / task})
        if main:
            print(format_table(results[task]) + ("" if task == tasks[-1] else "\n"))
    return results


def _mixture(kwargs: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The split and tasks of a folder that ``ofa test --data`` scores task by task: one whose
    split mixes tasks, with no ``--task`` picking one."""
    if kwargs.get("dataset") != "folder" or kwargs.get("task") is not None:
        return None
    data = read_folder(kwargs["data_root"], None, bool(kwargs.get("strict")))
    split, tasks = folder_tasks(data, kwargs.get("split"))
    return (split, tasks) if len(tasks) > 1 else None
