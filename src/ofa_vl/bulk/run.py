"""``ofa predict``: one task over a whole collection, streamed, resumable, sharded by torchrun.

The loop of ``ofa test`` (``evaluate.py``) without labels: images are decoded and resized in
DataLoader workers (:meth:`~ofa_vl.preprocess.PreprocessConfig.image`), the pipeline's
:meth:`~ofa_vl.api.OFAPipeline.predict_batch` runs the model, and results leave memory a chunk
at a time (:mod:`.writer`). Batches are fixed cuts of ``batch_size`` records inside a chunk, and
chunk ``k`` belongs to rank ``k % world``: every batch, hence every row, is the same whatever the
number of processes or loader workers, and after a resume. A bad record is dropped from its batch
and reported; nothing stops the job.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from ..api import OFAPipeline, get_model
from ..distributed import Dist, init_distributed, resolve_device
from ..errors import OFAError, OFARuntimeError, OFAValueError, describe
from ..evaluate import _check_settings, _settings
from ..preprocess import PreprocessConfig
from ..runs import RunLock
from .chunks import Job, LoadedBatch, chunks, cuts, load_batch, run_chunks
from .config import PredictConfig
from .inputs import count_records, read_inputs
from .writer import ChunkStore, merge, output_format

__all__ = ["PredictSummary", "predict"]


@dataclass(frozen=True)
class PredictSummary:
    """What a run of :func:`predict` did. ``rows`` / ``failed`` count the whole result set (resumed
    chunks included); ``predicted`` the images this run computed, ``skipped`` those it resumed."""

    out: Path
    errors: Path
    rows: int
    failed: int
    predicted: int
    skipped: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_status(self) -> int:
        """0: every record predicted; 1: some failed (see :attr:`errors`); 2: all failed."""
        return 0 if not self.failed else 2 if not self.rows else 1

    def line(self) -> str:
        failed = f", {self.failed} failed (see {self.errors})" if self.failed else ", 0 failed"
        return (
            f"ofa predict: {self.rows} rows ({self.predicted} predicted, {self.skipped} resumed)"
            f"{failed}, {self.images_per_s:.1f} images/s over {self.seconds:.1f} s -> {self.out}"
        )


class _Stream(IterableDataset[LoadedBatch]):
    """This rank's chunks not yet done, batch by batch; loader worker ``w`` of ``W`` loads batches
    ``n`` with ``n % W == w`` (the DataLoader takes them round-robin, so in order). Every worker
    reads the record stream (paths, or a table's bytes) and holds one chunk of records at most."""

    def __init__(
        self,
        inputs: Sequence[str],
        field_names: Sequence[str],
        preprocessing: PreprocessConfig,
        sizes: tuple[int, int],  # chunk size, batch size
        ranks: Dist,
        done: frozenset[int],
    ) -> None:
        self.inputs, self.field_names, self.preprocessing = list(inputs), field_names, preprocessing
        self.chunk_size, self.batch_size = sizes
        self.rank, self.world, self.done = ranks.rank, ranks.world, done

    def __iter__(self) -> Iterator[LoadedBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n = 0
        for k, chunk in chunks(read_inputs(self.inputs, self.field_names), self.chunk_size):
            if k % self.world != self.rank or k in self.done:
                continue
            for last, part in cuts(chunk, self.batch_size):
                if n % workers == worker:
                    yield load_batch(self.preprocessing, k, last, part)
                n += 1


def _as_is(batch: Any) -> Any:
    """The loader's collate: a worker's batch is already one."""
    return batch


def _open_run(
    store: ChunkStore, out: Path, resume: bool, ranks: Dist, held: ExitStack
) -> tuple[list[int], int | None]:
    """Rank 0 locks the run (into ``held``) and finds its done chunks; every rank gets them, or
    the failure. Also the lock's descriptor, on rank 0."""
    done: list[int] = []
    error: OFAError | OSError | None = None
    lock: int | None = None
    if ranks.main:
        try:
            lock = held.enter_context(RunLock(store.folder, "ofa predict")).fileno()
            done = store.done()
            if not resume and (done or out.exists()):
                what = (
                    f"{store.folder} holds {len(done)} finished chunks" if done else f"{out} exists"
                )
                raise OFAValueError(
                    f"{what}; pass --resume to continue that run or choose another --out"
                )
        except (OFAError, OSError) as e:
            error = e
    done, failure = ranks.broadcast((done, None if error is None else describe(error)))
    if error is not None:
        raise error
    if failure is not None:
        raise OFARuntimeError(failure)
    return done, lock


def _drop_lock(fd: int | None, worker: int) -> None:
    """A loader worker's ``worker_init_fn``: close its forked copy of the run lock, which would
    otherwise hold the lock of a killed run until the worker notices (seconds)."""
    if fd is not None:
        os.close(fd)


def predict(
    model: OFAPipeline | str | Path,
    inputs: str | Sequence[str],
    out: str | Path,
    config: PredictConfig | None = None,
    **options: Any,
) -> PredictSummary:
    """Run one task over every image of ``inputs`` into ``out`` (:mod:`ofa_vl.bulk`).

    Args:
        model: a pipeline, or a zoo name / checkpoint for :func:`~ofa_vl.api.get_model`.
        inputs: folders, globs, ``.txt`` lists, ``.csv`` / ``.jsonl`` / ``.parquet`` tables,
            WebDataset shards (braces expanded); :mod:`ofa_vl.bulk.inputs`.
        out: the result file; ``out.errors.jsonl`` gets the failures, ``out.parts/`` the chunks.
        config: how (:class:`PredictConfig`: ``task``, ``fields``, ``format``, ``chunk_size``,
            ``resume``, ``engine``, ...; default: its defaults).
        options: :class:`PredictConfig` fields over ``config`` (``task="vqa", batch_size=32``).
    """
    c = PredictConfig.of(config, **options)
    out = Path(out)
    dev = model.device if isinstance(model, OFAPipeline) else resolve_device(c.device)
    ranks, created = init_distributed(dev)
    build = c.model_options()
    try:
        with ExitStack() as held:
            if isinstance(model, OFAPipeline):
                pipe = model if c.task in (None, model.task.name) else model.with_task(c.task)
            else:
                pipe = get_model(model, device=dev, **build)
            fmt = output_format(out, c.format, pipe.task.name)
            job = Job([inputs] if isinstance(inputs, str) else list(inputs),
                      ChunkStore(Path(f"{out}.parts")), c.chunk_size, c.batch_size,
                      dict(c.fields or {}), dict(c.generation or {}))  # fmt: skip
            done, lock = _open_run(job.store, out, c.resume, ranks, held)
            settings = {**_settings(pipe, job.overrides), "task": pipe.task.name,
                        "inputs": job.sources, "fields": job.defaults, "batch_size": c.batch_size,
                        "chunk_size": c.chunk_size}  # fmt: skip
            _check_settings(job.store.folder, settings, bool(done), ranks)

            def compute(bar: tqdm) -> tuple[int, int]:
                if c.engine == "ray":
                    from .ray_engine import run_ray

                    spec = pipe if isinstance(model, OFAPipeline) else (str(model), build)
                    return run_ray(spec, job, done, c.actors, dev.type == "cuda", bar)
                loader = _loader(pipe, job, ranks, done, c.workers, lock)
                return run_chunks(pipe, iter(loader), job, bar)

            return _execute(job, done, ranks, fmt, out, c.progress, compute)
    finally:
        if created:
            dist.destroy_process_group()


def _loader(
    pipe: OFAPipeline, job: Job, ranks: Dist, done: list[int], workers: int, lock: int | None
) -> DataLoader[LoadedBatch]:
    stream = _Stream(job.sources, pipe.task.fields(), pipe.task.preprocessing,
                     (job.chunk_size, job.batch_size), ranks, frozenset(done))  # fmt: skip
    init = functools.partial(_drop_lock, lock)
    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                      worker_init_fn=init)  # fmt: skip


def _execute(
    job: Job,
    done: list[int],
    ranks: Dist,
    fmt: str,
    out: Path,
    progress: bool,
    compute: Callable[[tqdm], tuple[int, int]],
) -> PredictSummary:
    """``compute`` the chunks not ``done`` on every rank, then rank 0 merges them into ``out``."""
    start = time.perf_counter()
    old_rows, old_failed = job.store.count(done) if ranks.main else (0, 0)
    total = count_records(job.sources) if ranks.world == 1 and progress else None
    bar = tqdm(total=total, initial=old_rows + old_failed, unit="img", desc="ofa predict",
               disable=not (ranks.main and progress))  # fmt: skip
    try:
        mine = compute(bar)
    finally:
        bar.close()
    counts = ranks.gather(mine)  # also the barrier before the merge
    new_rows, new_failed = sum(c[0] for c in counts), sum(c[1] for c in counts)
    errors = Path(f"{out}.errors.jsonl")
    if ranks.main:
        merge(job.store, out, fmt, errors)
    summary = PredictSummary(out, errors, old_rows + new_rows, old_failed + new_failed,
                             new_rows, old_rows + old_failed, time.perf_counter() - start)  # fmt: skip
    return ranks.broadcast(summary)
