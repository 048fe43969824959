"""``ofa predict --engine ray``: the chunks of a run as a Ray Data job, for many machines.

Ray's batch-inference pattern (its VLM examples: a dataset -> ``map_batches`` with an actor class
holding the model, one per GPU -> write): the dataset is the chunks not yet written, an actor
pool of :class:`ChunkPredictor` (each with its own pipeline) predicts a chunk batch by batch
exactly as one process would, and writes it to ``OUT.parts/`` (a file system every node sees);
the driver merges the chunks. So the rows are those of one process, and a resume skips the
written chunks, as it does there. ``ray.init()`` joins the cluster of ``RAY_ADDRESS`` or
starts a local one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm import tqdm

from ..allocator import keep_freed_memory
from ..api import OFAPipeline, get_model
from .chunks import Job, chunk_batches, chunks, run_chunks
from .inputs import Record, read_inputs

__all__ = ["ChunkPredictor", "run_ray"]

ModelSpec = (
    OFAPipeline | tuple[str, dict[str, Any]]
)  # a pipeline, or a name and get_model's options


class ChunkPredictor:
    """A Ray actor: one pipeline, a chunk of records per call, written where the driver merges."""

    def __init__(self, spec: ModelSpec, job: Job, device: str) -> None:
        keep_freed_memory()  # a Ray worker is not started by the ``ofa`` command
        if isinstance(spec, OFAPipeline):
            self.pipe = spec
        else:
            self.pipe = get_model(spec[0], device=device, **spec[1])
        self.job = job
        self._records: Iterator[tuple[int, list[Record]]] = iter(())
        self._next = 0  # the chunk self._records yields next

    def _chunk(self, k: int) -> list[Record]:
        """Chunk ``k``'s records: the open stream goes on when ``k`` lies ahead (an actor gets
        increasing chunks), else it is read again from the start."""
        if k < self._next:
            self._records, self._next = iter(()), 0
        if self._next == 0:
            fields = self.pipe.task.fields()
            self._records = chunks(read_inputs(self.job.sources, fields), self.job.chunk_size)
        for index, records in itertools.islice(self._records, k - self._next, None):
            self._next = index + 1
            return records
        raise LookupError(f"chunk {k} is past the end of the input")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        counts = []
        for k in batch["chunk"].tolist():
            loaded = chunk_batches(self.pipe.task.preprocessing, k, self._chunk(k),
                                   self.job.batch_size)  # fmt: skip
            counts.append(run_chunks(self.pipe, loaded, self.job, tqdm(disable=True)))
        return {"chunk": batch["chunk"], "rows": np.array([c[0] for c in counts]),
                "failed": np.array([c[1] for c in counts])}  # fmt: skip


def run_ray(
    spec: ModelSpec, job: Job, done: list[int], actors: int, gpus: bool, bar: tqdm
) -> tuple[int, int]:
    """Predict the chunks not ``done`` on ``actors`` Ray actors (a GPU each when ``gpus``);
    (rows, errors) written."""
    import ray

    if not ray.is_initialized():
        ray.init()
    skip = set(done)
    todo = [k for k, _ in chunks(read_inputs(job.sources), job.chunk_size) if k not in skip]
    if not todo:
        return 0, 0
    data = ray.data.from_items([{"chunk": k} for k in todo])
    predicted = data.map_batches(
        ChunkPredictor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(actors, len(todo))),
        fn_constructor_kwargs={"spec": spec, "job": job, "device": "cuda" if gpus else "cpu"},
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    rows = failed = 0
    for row in predicted.iter_rows():
        rows, failed = rows + int(row["rows"]), failed + int(row["failed"])
        bar.update(int(row["rows"]) + int(row["failed"]))
    return rows, failed
