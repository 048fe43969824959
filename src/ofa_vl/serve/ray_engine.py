"""``ofa serve --engine ray``: the service on Ray Serve, one replica per GPU (the ``ray`` extra).

Each replica is the whole FastAPI app of :func:`~.app.create_app` behind ``serve.ingress`` (built
in the replica, its model loaded there: its own batcher, limits and metrics), with
``ray_actor_options={"num_gpus": 1}`` where the cluster has GPUs (one CPU otherwise). Ray Serve's
router sends each request to a replica with room (``max_ongoing_requests``) and its controller
replaces a replica that dies. ``autoscaling`` takes Ray Serve's ``autoscaling_config`` (the
README's example) instead of a fixed ``replicas``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..allocator import keep_freed_memory
from .app import create_app, load_models
from .config import ServeConfig

REPLICA_HEADER = "x-ofa-replica"  # which replica answered (its Ray Serve replica id)


class OFAReplica:
    """One Ray Serve replica: every model loaded on the replica's device, the app built on them."""

    def __init__(self, models: Sequence[str | Path], config: ServeConfig, load: Mapping[str, Any]):
        from ray import serve

        keep_freed_memory()  # a Ray worker is not started by the ``ofa`` command
        device = "cuda" if torch.cuda.is_available() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
        self.service = create_app(load_models(models, device=device, **load), config)
        replica = serve.get_replica_context().replica_id.unique_id
        self.service.state.prometheus.replica = replica

        @self.service.middleware("http")
        async def name_replica(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica
            return response

    def __serve_build_asgi_app__(self) -> Any:
        return self.service


def application(
    models: Sequence[str | Path],
    config: ServeConfig,
    *,
    replicas: int | None = None,
    autoscaling: Mapping[str, Any] | None = None,
    gpus: bool | None = None,
    **load: Any,
) -> Any:
    """The bound Ray Serve application (``serve.run`` it); ``gpus``: one GPU per replica
    (default: when the cluster has GPUs)."""
    import ray
    from ray import serve

    if gpus is None:
        gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    scaling: dict[str, Any] = (
        {"autoscaling_config": dict(autoscaling)}
        if autoscaling
        else {"num_replicas": replicas or 1}
    )
    deployment = serve.deployment(
        name="ofa", ray_actor_options={"num_gpus": 1} if gpus else {"num_cpus": 1},
        max_ongoing_requests=config.max_queue + config.max_batch, **scaling,
    )(serve.ingress()(OFAReplica))  # fmt: skip
    return deployment.bind(list(models), config, load)


def serve_ray(
    models: Sequence[str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int | None = None,
    config: ServeConfig | None = None,
    **load: Any,
) -> None:
    """Start (or join, ``RAY_ADDRESS``) a Ray cluster and serve ``models`` until interrupted."""
    import ray
    from ray import serve

    ray.init()
    serve.start(http_options={"host": host, "port": port})
    serve.run(
        application(models, config or ServeConfig(), replicas=replicas, **load), route_prefix="/"
    )
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
