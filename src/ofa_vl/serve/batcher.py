"""Dynamic batching: concurrent requests with the same key are decoded together, off the event loop.

One scheduler task takes the oldest waiting request, waits up to ``max_wait_s`` after its arrival
(or until ``max_batch`` requests of its key are waiting), then runs the batch function of that key
once on all of them in a single worker thread (like TorchServe / Triton's dynamic batcher). The
event loop stays free while a batch runs; new requests queue meanwhile and are batched next.
A batch that raises is run again one request at a time, so a request that cannot be answered
fails alone and its neighbours are still answered.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

BatchFn = Callable[[list[Any]], list[Any]]


class QueueFullError(RuntimeError):
    """The queue holds ``max_queue`` requests; ``retry_after`` is a guess in seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    key: Hashable
    fn: BatchFn
    payload: Any
    future: asyncio.Future[Any]
    arrived: float


class Batcher:
    """Gathers :meth:`submit` calls by key into batches of at most ``max_batch``."""

    def __init__(self, max_batch: int = 8, max_wait_s: float = 0.01, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_s >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.batch_sizes: Counter[int] = Counter()
        self.retried = 0  # batches that failed and were run again request by request
        self.running = 0
        self.observers: list[Callable[[int, float], None]] = []  # (batch size, seconds) per batch
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._batch_s = 0.0  # moving average of a batch's duration, for Retry-After
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def alive(self) -> bool:
        """Whether the scheduler is running."""
        return self._scheduler is not None and not self._scheduler.done()

    def start(self) -> None:
        """Start the scheduler on the running event loop and the inference thread."""
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ofa-batch")
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    async def close(self) -> None:
        """Stop scheduling; waiting requests fail, a running batch finishes in its thread."""
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, key: Hashable, fn: BatchFn, payload: Any) -> Any:
        """``fn([payload, ...])[i]`` for this payload, ``fn`` being run once per batch of ``key``.

        Raises:
            QueueFullError: ``max_queue`` requests are already waiting.
        """
        if self._wakeup is None:
            raise RuntimeError("Batcher.start() was not called")
        if len(self._queue) >= self.max_queue:
            per_batch = self._batch_s or self.max_wait_s
            raise QueueFullError(max(1, math.ceil(per_batch * len(self._queue) / self.max_batch)))
        loop = asyncio.get_running_loop()
        job = _Job(key, fn, payload, loop.create_future(), loop.time())
        self._queue.append(job)
        self._wakeup.set()
        try:
            return await job.future
        finally:  # cancelled (a timeout) before its batch started: give the place back
            if job in self._queue:
                self._queue.remove(job)

    def _same_key(self, key: Hashable) -> list[_Job]:
        return [j for j in self._queue if j.key == key][: self.max_batch]

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        assert wakeup is not None
        while True:
            while not self._queue:
                wakeup.clear()
                await wakeup.wait()
            first = self._queue[0]
            while len(self._same_key(first.key)) < self.max_batch and first in self._queue:
                remaining = first.arrived + self.max_wait_s - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except asyncio.TimeoutError:  # noqa: UP041  (not the builtin on Python 3.10)
                    break
            batch = self._same_key(first.key)
            for job in batch:
                self._queue.remove(job)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        self.batch_sizes[len(batch)] += 1
        self.running = len(batch)
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, batch[0].fn, [j.payload for j in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"the batch function gave {len(results)} results for {len(batch)}"
                )
        except Exception as err:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(err)
            else:  # retried one by one: only the request that fails alone gets the error
                self.retried += 1
                for job in batch:
                    if not job.future.done():  # not timed out meanwhile
                        await self._run([job])
        else:
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self.running = 0
            elapsed = time.perf_counter() - start
            for observe in self.observers:
                observe(len(batch), elapsed)
            self._batch_s = elapsed if not self._batch_s else 0.8 * self._batch_s + 0.2 * elapsed
