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
    distributed run scores exactly as one uninterrupted process: each line read back as the
    task's typed result (``Result.from_dict``), scored by the task's metric
    (:mod:`ofa_vl.metrics.tasks`) against each sample's truth.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .api import OFAPipeline, get_model
from .arguments import flag
from .data import write_vqa_submission
from .data.benchmarks import DATASETS, Benchmark, folder_benchmark, folder_tasks, load_benchmark
from .data.folder import read_folder
from .data.predictions import PREDICTIONS, append_records, prepare_output, read_predictions
from .distributed import Dist, init_distributed, resolve_device
from .errors import OFAError, OFARuntimeError, OFAValueError, describe
from .formats import coco_entries
from .images import ImageError, ImageInfo
from .metrics.tasks import MMPRETRAIN_VQA, VQA_NOTE, task_metric
from .options import at_least, check_counts, check_image_size
from .preprocess import PreprocessConfig
from .runs import RunLock, weights_fingerprint, write_atomic
from .tasks import TASKS, Result, Task
from .zoo import MODELS

__all__ = [
    "DATASETS", "MMPRETRAIN_VQA", "PREDICTIONS", "VQA_NOTE", "Benchmark", "EvalConfig",
    "EvalReport", "evaluate", "evaluate_command", "folder_benchmark", "folder_tasks",
    "format_table", "load_benchmark", "read_predictions", "score",
]  # fmt: skip

METRICS = "metrics.json"
COCO_RESULTS = "coco_results.json"
SUBMISSION = "vqa_submission.json"
RUN_SETTINGS = "settings.json"


def score(bench: Benchmark, task: Task, results: Sequence[Result]) -> dict[str, float]:
    """The task's published metrics (percentages, 2 decimals) of ``results``, aligned with the
    benchmark's samples."""
    return task_metric(task).scores(task, results, bench.samples)


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
@dataclass(frozen=True)
class EvalConfig:
    """Everything ``ofa test`` is told: what to score, where the run goes, how to predict (its
    flags are these fields: ``batch_size`` -> ``--batch-size``)."""

    dataset: str = flag("folder", "the benchmark (folder: your own data, --data)",
                        choices=tuple(DATASETS))  # fmt: skip
    data_root: str | Path | None = flag(None, "the dataset's folder (mmpretrain's data/coco)")
    split: str | None = flag(None, "test, val, testA, val2014, ...; a folder: test, else val")
    task: str | None = flag(None, "a folder: score only this task (default: each)")
    strict: bool = flag(False, "a folder: refuse bad lines")
    out: str | Path | None = flag(None, "run folder (default ofa-test/<model>_<data>_<split>)")
    batch_size: int = flag(16, "images per batch")
    limit: int | None = flag(None, "evaluate the first N samples only")
    resume: bool = flag(False, "continue the run in out")
    workers: int = flag(2, "image loading processes (0: none)")
    device: str | None = flag(None, "cpu, cuda (default when present; torchrun: each rank's)")
    pretrained: str | Path | None = flag(None, "weights overriding the named model's")
    tokenizer: str | Path | None = flag(None, "tokenizer directory or hub id")
    object_tags: str | Path | None = flag(None, "VQA: VinVL object tags (.json/.tsv)")
    generation: Mapping[str, Any] = flag({}, "decoding overrides (num_beams, ...)")
    progress: bool = flag(True, "show a progress bar")
    coco_results: bool = flag(False, "also write OUT/coco_results.json (captions or boxes)")
    image_size: int | None = flag(None, "a named model: input resolution (default: the model's)")
    answers: str | Path | None = flag(None, "a named model: VQA answer list (ans2label .pkl/.json)")
    # its flag (and choices) is the runtime flag every command shares (cli.common.Runtime)
    backend: str | None = flag(None, "a named model: torch or onnxruntime (an exported folder)")

    def model_options(self) -> dict[str, Any]:
        """The ``get_model`` options given for a named model (image size, answers, backend)."""
        given = (("image_size", self.image_size), ("answers", self.answers),
                 ("backend", self.backend))  # fmt: skip
        return {k: v for k, v in given if v is not None}


@dataclass(frozen=True)
class EvalReport:
    """What a run scored (``OUT/metrics.json`` is its :meth:`to_dict`)."""

    model: str
    dataset: str
    split: str
    samples: int
    settings: dict[str, Any]  # what decided the predictions (the resume fingerprint)
    metrics: dict[str, float]  # published names -> percentages; empty for a submission
    reference: dict[str, float]  # the model card's published numbers for the same metrics
    predictions: str  # OUT/predictions.jsonl
    submission: str | None = None  # OUT/vqa_submission.json, for a split without answers
    coco_results: str | None = None  # OUT/coco_results.json, when asked for

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``metrics.json`` (the paths not written left out)."""
        out = dict(vars(self))
        return {
            k: v for k, v in out.items() if v is not None or k not in ("submission", "coco_results")
        }


def evaluate(
    model: OFAPipeline | str | Path, config: EvalConfig, benchmark: Benchmark | None = None
) -> EvalReport:
    """Predict every sample of a benchmark split and score the predictions.

    Args:
        model: a pipeline, or a zoo name / checkpoint for :func:`~ofa_vl.api.get_model` (with
            the config's ``pretrained``, ``tokenizer``, ``device`` and model options).
        config: what to score (``dataset``: one of :data:`DATASETS`, ``data_root`` holding it
            in mmpretrain's layout, or ``"folder"``: your own data, :mod:`ofa_vl.data.folder`)
            and how (:class:`EvalConfig`).
        benchmark: the samples, already read (then the config's dataset fields are unused).

    Returns:
        The :class:`EvalReport` ``out/metrics.json`` holds. Under torchrun, every rank gets it.
    """
    c = config
    check_counts(batch_size=c.batch_size, limit=c.limit)
    at_least("workers", c.workers, 0)
    if isinstance(model, OFAPipeline) and (
        c.pretrained or c.tokenizer or c.device or c.model_options()
    ):
        raise OFAValueError("pretrained, tokenizer, device and task options need a model name")
    dev = model.device if isinstance(model, OFAPipeline) else resolve_device(c.device)
    ranks, created = init_distributed(dev)
    try:
        bench = benchmark or _read_benchmark(c, ranks)
        if c.coco_results and not TASKS[bench.task].coco_results:
            raise OFAValueError(f"COCO results hold captions and boxes, not {bench.task!r} answers")
        name = model.name if isinstance(model, OFAPipeline) else str(model)
        where = Path(c.data_root).name if bench.name == "folder" and c.data_root else bench.name
        out = Path(c.out or _default_out(name, where, bench.split))
        with ExitStack() as held:  # rank 0 holds the run folder's lock until the run ends
            done = _resume_point(out, c.resume, bench, ranks, held)
            if isinstance(model, OFAPipeline):
                pipe = model
            else:
                pipe = get_model(
                    model, c.pretrained, device=dev, tokenizer=c.tokenizer, task=bench.task,
                    **{**bench.task_options, **c.model_options()},
                )  # fmt: skip
            if pipe.task.name != bench.task:
                raise OFAValueError(
                    f"{bench.name} needs a {bench.task!r} model, got a {pipe.task.name!r} one"
                )
            check_image_size(pipe.task.image_size, pipe.model.cfg)
            overrides = dict(c.generation)
            _check_settings(out, _settings(pipe, overrides), bool(done), ranks)
            _predict(pipe, bench, out, done, ranks, c, overrides)
            report = (
                _finish(pipe, bench, out, overrides, c.coco_results) if ranks.rank == 0 else None
            )
            report = ranks.broadcast(report)
            assert report is not None
            return report
    finally:
        if created:
            dist.destroy_process_group()


def _default_out(model: str, where: str, split: str) -> Path:
    return Path("ofa-test") / f"{Path(model).stem}_{where}_{split}"


def _read_benchmark(config: EvalConfig, ranks: Dist) -> Benchmark:
    """The samples :func:`evaluate` scores; rank 0 reports a folder's skipped lines."""
    dataset, root, split = config.dataset, config.data_root, config.split
    if dataset not in DATASETS:
        raise OFAValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if root is None or (split is None and dataset != "folder"):
        raise OFAValueError(f"{dataset} needs a data root and a split")
    if dataset != "folder":
        return load_benchmark(dataset, root, str(split), config.limit, config.object_tags)
    data = read_folder(root, config.task, config.strict)
    if ranks.rank == 0:
        data.report()
    return folder_benchmark(data, split, config.task, config.limit)


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
            done = prepare_output(out, resume, bench)
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
    pre = pipe.task.preprocessing
    weights = pipe.model.weights_file
    return {
        "model": pipe.name,
        "weights": weights_fingerprint(weights) if weights is not None else None,
        "image_size": pre.image_size,
        "interpolation": pre.interpolation,
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
    config: EvalConfig,
    overrides: Mapping[str, Any],
) -> None:
    """Predict the samples not ``done``, this rank's batches; rank 0 appends every rank's."""
    ids = [s.id for s in bench.samples]
    batches = _batches(ids, config.batch_size, done)
    mine = batches[ranks.rank :: ranks.world]
    images = _Images([s.image for s in bench.samples], pipe.task.preprocessing)
    loader = iter(
        DataLoader(images, batch_sampler=mine, num_workers=config.workers, collate_fn=_collate)
    )
    main = ranks.rank == 0
    bar = tqdm(total=len(ids), initial=len(ids) - sum(map(len, batches)), unit="img",
               disable=not (main and config.progress), desc=f"{bench.name} {bench.split}")  # fmt: skip
    sink = (out / PREDICTIONS).open("a", encoding="utf-8") if main else None
    try:
        for step in range(math.ceil(len(batches) / ranks.world)):
            records: list[dict[str, Any]] = []
            if step < len(mine):
                batch = next(loader)
                if isinstance(batch, ImageError):
                    raise batch
                index, pixels, infos = batch
                fields = [dict(bench.samples[i].fields) for i in index]
                results = pipe.predict_batch(pixels, infos, fields, **overrides)
                records = [
                    {"id": ids[i], **r.to_dict(), "confidence": r.confidence}
                    for i, r in zip(index, results)
                ]
            gathered = [r for part in ranks.gather(records) for r in part]
            if sink is not None:
                append_records(sink, gathered)
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
) -> EvalReport:
    """Rank 0: score ``predictions.jsonl``, write ``metrics.json`` (and the VQA submission)."""
    by_id = {r["id"]: r for r in read_predictions(out / PREDICTIONS)}
    records = [by_id[s.id] for s in bench.samples]
    task = pipe.task
    if task.result_type is None:
        raise OFAValueError(f"task {task.name!r} results cannot be read back from {PREDICTIONS}")
    results = [task.result_type.from_dict(r) for r in records]
    metrics: dict[str, float] = {}
    reference: dict[str, float] = {}
    submission = None
    if bench.has_answers:
        metrics = score(bench, task, results)
        card = MODELS.get(pipe.name)
        published = card.metrics if card else {}  # "Accuracy (testA)" or "Accuracy", ...
        found = {k: published.get(f"{k} ({bench.split})", published.get(k)) for k in metrics}
        reference = {k: v for k, v in found.items() if v is not None}
    else:
        answers = {s.id: task.answer(r) for s, r in zip(bench.samples, results)}
        submission = str(write_vqa_submission(answers, out / SUBMISSION))
    report = EvalReport(
        pipe.name, bench.name, bench.split, len(records), _settings(pipe, overrides), metrics,
        reference, str(out / PREDICTIONS), submission,
        str(_write_coco(bench, records, out / COCO_RESULTS)) if coco_results else None,
    )  # fmt: skip
    write_atomic(out / METRICS, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _write_coco(bench: Benchmark, records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The predictions as COCO results: per sample its image id (and RefCOCO's category)."""
    entries = []
    for sample, record in zip(bench.samples, records):
        image_id = sample.id if sample.image_id is None else sample.image_id
        entries += coco_entries(record, image_id, sample.category_id)
    write_atomic(path, json.dumps(entries))
    return path


def format_table(report: EvalReport) -> str:
    """The metrics of :func:`evaluate` beside the model's published numbers, as text."""
    lines = [f"{report.model} on {report.dataset} {report.split} ({report.samples} samples)"]
    if report.metrics:
        width = max(len(k) for k in report.metrics) + 2
        lines.append(f"{'metric':<{width}}{'value':>8}{'reference':>11}")
        for key, value in report.metrics.items():
            ref = report.reference.get(key)
            lines.append(f"{key:<{width}}{value:>8.2f}{'-' if ref is None else f'{ref:.2f}':>11}")
    if MMPRETRAIN_VQA in report.metrics:
        lines.append(VQA_NOTE)
    if report.submission is not None:
        lines.append(f"no annotations for this split; EvalAI submission: {report.submission}")
    lines.append(f"predictions: {report.predictions}")
    return "\n".join(lines)


def evaluate_command(model: str, config: EvalConfig) -> EvalReport | dict[str, EvalReport]:
    """``ofa test MODEL --dataset ...``: :func:`evaluate`, then rank 0 prints the table.

    A folder whose split mixes tasks (``--data`` without ``--task``) is scored task by task, each
    into ``OUT/<task>`` with its own table; the reports are returned by task."""
    main = int(os.environ.get("RANK", "0")) == 0
    mixed = _mixture(config)
    if mixed is None:
        report = evaluate(model, config)
        if main:
            print(format_table(report))
        return report
    split, tasks = mixed
    where = Path(str(config.data_root)).name
    base = Path(config.out or _default_out(model, where, split))
    reports: dict[str, EvalReport] = {}
    for task in tasks:
        reports[task] = evaluate(model, replace(config, task=task, out=base / task))
        if main:
            print(format_table(reports[task]) + ("" if task == tasks[-1] else "\n"))
    return reports


def _mixture(config: EvalConfig) -> tuple[str, list[str]] | None:
    """The split and tasks of a folder that ``ofa test --data`` scores task by task: one whose
    split mixes tasks, with no ``--task`` picking one."""
    if config.dataset != "folder" or config.task is not None or config.data_root is None:
        return None
    data = read_folder(config.data_root, None, config.strict)
    split, tasks = folder_tasks(data, config.split)
    return (split, tasks) if len(tasks) > 1 else None
