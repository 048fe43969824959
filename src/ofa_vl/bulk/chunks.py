"""The work of one chunk of ``ofa predict``, shared by both engines (:mod:`.run`'s local loop and
:mod:`.ray_engine`'s actors): batches loaded from records, predicted (one bad record fails alone)
and written a chunk at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from ..api import OFAPipeline
from ..errors import OFAError, describe
from ..generation import GenerationConfig
from ..images import ImageError, ImageInfo
from ..preprocess import PreprocessConfig
from ..tasks import Result
from ..tasks.runners import Prepared
from .inputs import Record, image_source
from .writer import ChunkStore

__all__ = ["Job", "LoadedBatch", "chunk_batches", "chunks", "cuts", "load_batch", "run_chunks"]


@dataclass(frozen=True)
class Job:
    """What every process of a run shares (the Ray engine ships it to its actors)."""

    sources: list[str]
    store: ChunkStore
    chunk_size: int
    batch_size: int
    defaults: dict[str, Any]  # task fields for every record
    overrides: dict[str, Any]  # decoding options


@dataclass
class LoadedBatch:
    """One batch as a loader worker hands it over: the records whose image loaded, their pixels
    (B, 3, S, S) and resize infos, and the others with their reason."""

    chunk: int
    last: bool  # the chunk's last batch: the chunk can be written after it
    records: list[Record]
    pixels: torch.Tensor | None
    infos: list[ImageInfo]
    failed: list[tuple[Record, str]]


def chunks(records: Iterator[Record], size: int) -> Iterator[tuple[int, list[Record]]]:
    """(k, records k * size ... (k + 1) * size - 1) of the stream."""
    for k in itertools.count():
        chunk = list(itertools.islice(records, size))
        if not chunk:
            return
        yield k, chunk


def cuts(chunk: list[Record], batch_size: int) -> Iterator[tuple[bool, list[Record]]]:
    """A chunk's fixed batches, each with whether it is the chunk's last."""
    for start in range(0, len(chunk), batch_size):
        yield start + batch_size >= len(chunk), chunk[start : start + batch_size]


def chunk_batches(
    preprocessing: PreprocessConfig, k: int, chunk: list[Record], batch_size: int
) -> Iterator[LoadedBatch]:
    """Chunk ``k``'s batches loaded in this process (the Ray engine's actors)."""
    for last, part in cuts(chunk, batch_size):
        yield load_batch(preprocessing, k, last, part)


def load_batch(
    preprocessing: PreprocessConfig, chunk: int, last: bool, records: list[Record]
) -> LoadedBatch:
    """One batch's images decoded and resized; the records that fail keep their reason."""
    good: list[tuple[Record, torch.Tensor, ImageInfo]] = []
    failed: list[tuple[Record, str]] = []
    for r in records:
        if r.error is not None or r.image is None:
            failed.append((r, r.error or "no image"))
            continue
        try:
            pixels, info = preprocessing.image(image_source(r.image))
        except (ImageError, OSError) as e:  # returned, not raised: one bad image fails alone
            failed.append((r, describe(e)))
            continue
        good.append((r, pixels, info))
    stacked = torch.stack([p for _, p, _ in good]) if good else None
    return LoadedBatch(
        chunk, last, [r for r, _, _ in good], stacked, [i for _, _, i in good], failed
    )


def _error(record: Record, reason: str) -> dict[str, Any]:
    return {"id": record.id, "index": record.index, "error": reason}


def _results(
    pipe: OFAPipeline, pixels: torch.Tensor, items: list[Prepared], config: GenerationConfig
) -> list[Result | str]:
    """The batch's results; when the batch fails on a user error, each query alone (the reason
    for those that fail again)."""
    try:
        return list(pipe.predict_prepared(pixels, items, config))
    except OFAError as e:
        if len(items) == 1:
            return [describe(e)]
    return [_results(pipe, pixels[i : i + 1], items[i : i + 1], config)[0]
            for i in range(len(items))]  # fmt: skip


def _predict_loaded(
    pipe: OFAPipeline, batch: LoadedBatch, defaults: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, errors) of one loaded batch: each record's fields checked, normalised and tokenized
    once (``OFAPipeline.prepare``), then one model call."""
    errors = [_error(r, reason) for r, reason in batch.failed]
    keep: list[int] = []
    fields: list[dict[str, Any]] = []
    items: list[Prepared] = []
    for j, r in enumerate(batch.records):
        given = {**defaults, **r.fields}
        try:
            items.append(pipe.prepare(given, batch.infos[j]))
        except OFAError as e:
            errors.append(_error(r, describe(e)))
            continue
        keep.append(j)
        fields.append(given)
    rows: list[dict[str, Any]] = []
    if keep:
        assert batch.pixels is not None
        config = pipe.decoding(**overrides)  # checked when the run began (its settings)
        results = _results(pipe, batch.pixels[keep], items, config)
        for j, given, res in zip(keep, fields, results):
            r = batch.records[j]
            if isinstance(res, str):
                errors.append(_error(r, res))
            else:
                rows.append({"id": r.id, **given, **res.as_dict()})
    errors.sort(key=lambda e: e["index"])
    return rows, errors


def run_chunks(
    pipe: OFAPipeline, loader: Iterator[LoadedBatch], job: Job, bar: tqdm
) -> tuple[int, int]:
    """Predict every loaded batch, writing each chunk when its last batch is done;
    (rows, errors) written."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    total = failed = 0
    for batch in loader:
        new_rows, new_errors = _predict_loaded(pipe, batch, job.defaults, job.overrides)
        rows += new_rows
        errors += new_errors
        bar.update(len(batch.records) + len(batch.failed))
        if batch.last:
            job.store.write(batch.chunk, rows, errors)
            total, failed = total + len(rows), failed + len(errors)
            rows, errors = [], []
    return total, failed
