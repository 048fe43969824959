"""The service's JSON counters (``GET /metrics`` without a scraper's ``Accept``): requests per
path and status, and a window of latencies per path, recorded by a pure ASGI middleware."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .reports import LatencyStats


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    return values[max(0, math.ceil(q * len(values)) - 1)] if values else 0.0


class Metrics:
    """Request counts per path and status, and a window of latencies per path."""

    def __init__(self, window: int = 2048):
        self.counts: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.latencies: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self.observers: list[Callable[[str, int, float], None]] = []  # (path, status, seconds)

    def record(self, path: str, status: int, seconds: float) -> None:
        self.counts[path][status] += 1
        self.latencies[path].append(seconds * 1000)
        for observe in self.observers:  # the Prometheus histograms (prometheus.instrument)
            observe(path, status, seconds)

    def latency_stats(self) -> dict[str, LatencyStats]:
        out = {}
        for path, window in self.latencies.items():
            v = sorted(window)
            out[path] = LatencyStats(
                count=len(v),
                p50=_percentile(v, 0.5),
                p90=_percentile(v, 0.9),
                p99=_percentile(v, 0.99),
            )
        return out


class MetricsMiddleware:
    """Pure ASGI middleware: records the status and latency of requests to ``paths``."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: frozenset[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.record(scope["path"], status, time.perf_counter() - start)
