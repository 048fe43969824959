"""Prometheus metrics of one service replica, in the standard exposition format (prometheus_client).

Every replica (one :class:`~.service.Service`: its batcher, its model) keeps its own registry: request
latencies per path and status, the batch sizes the batcher decoded and how long each batch took
(histograms), and, read when scraped, the requests waiting in its queue and in the batch being
decoded (gauges). Each sample is labelled ``replica``. ``GET /metrics`` answers the exposition
format to a scraper (an ``Accept`` naming ``text/plain`` or ``application/openmetrics-text``, as
Prometheus sends), and the JSON report (:class:`~.reports.MetricsResponse`) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .service import Service

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SCRAPER_TYPES = ("text/plain", "application/openmetrics-text")  # what Prometheus asks for


class ReplicaMetrics:
    """One replica's histograms and gauges; :meth:`collect` labels every sample ``replica``."""

    def __init__(self, queued: Callable[[], int], running: Callable[[], int], replica: str = "0"):
        self.replica = replica
        self._queued, self._running = queued, running
        self._own = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "ofa_serve_request_seconds", "Request latency, from its first byte to its answer",
            ["path", "status"], buckets=LATENCY_BUCKETS, registry=self._own,
        )  # fmt: skip
        self.batch_size = Histogram(
            "ofa_serve_batch_size", "Requests decoded together in one batch",
            buckets=BATCH_BUCKETS, registry=self._own,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "ofa_serve_batch_seconds", "Time one batch took to decode",
            buckets=LATENCY_BUCKETS, registry=self._own,
        )  # fmt: skip

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(path, str(status)).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """The registry's families and the queue gauges, each sample labelled with the replica."""
        queue = GaugeMetricFamily("ofa_serve_queue_depth", "Requests waiting for a batch")
        queue.add_metric([], self._queued())
        running = GaugeMetricFamily("ofa_serve_running", "Requests in the batch being decoded")
        running.add_metric([], self._running())
        for family in (*self._own.collect(), queue, running):
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                out.add_sample(s.name, {"replica": self.replica, **s.labels}, s.value, s.timestamp)
            yield out


class Merged:
    """A collector of several replicas' metrics: one family per name, every replica's samples."""

    def __init__(self, replicas: Sequence[ReplicaMetrics]):
        self.replicas = replicas

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for replica in self.replicas:
            for family in replica.collect():
                if family.name in families:
                    families[family.name].samples.extend(family.samples)
                else:
                    families[family.name] = family
        return families.values()


def instrument(service: Service) -> ReplicaMetrics:
    """Attach Prometheus metrics to ``service``: its batcher reports each batch, its request
    metrics each request (their ``observers`` hooks)."""
    metrics = ReplicaMetrics(lambda: service.batcher.queued, lambda: service.batcher.running)
    service.batcher.observers.append(metrics.observe_batch)
    service.metrics.observers.append(metrics.observe_request)
    return metrics


def wants_exposition(request: Request) -> bool:
    """Whether the client asked for the exposition format (a scraper) rather than JSON."""
    accept = request.headers.get("accept", "")
    return any(t in accept for t in SCRAPER_TYPES)


def exposition(request: Request, collector: Any) -> Response:
    """``collector``'s metrics in the format the request's ``Accept`` chose (text or OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=content_type)


def metrics_route(service: Service, metrics: ReplicaMetrics) -> Callable[[Request], Response]:
    """``GET /metrics``: the exposition format to a scraper, the JSON report to anyone else."""

    def handler(request: Request) -> Response:
        if wants_exposition(request):
            return exposition(request, metrics)
        return Response(service.metrics_report().model_dump_json(), media_type="application/json")

    handler.__name__ = "metrics"
    return handler
