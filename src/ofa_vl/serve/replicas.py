"""Replicas in one process (``ofa serve --replicas N --devices cuda:0,cuda:1|auto``).

Each replica is a whole service (:func:`~.app.create_app`: its model on its own device, its own
batcher, limits and metrics); :class:`Replicated` is the ASGI app in front that hands each
request to the replica with the fewest requests in flight (least-outstanding, like Ray Serve's
router) and answers ``/metrics`` in the exposition format with every replica's samples, labelled
``replica`` (the JSON report is one replica's: ``/metrics?replica=I``, 0 by default). On GPUs the replicas' batches run at once (each batcher has its own thread, and torch
releases the GIL); on CPU they share the cores. For many machines: :mod:`.ray_engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from ..errors import OFAValueError
from ..options import check_port
from .app import create_app, load_models, server_config
from .config import ServeConfig
from .prometheus import Merged, exposition, wants_exposition


def replica_devices(devices: str | None, replicas: int | None) -> list[str]:
    """The device of each replica: ``auto`` is every CUDA device (else ``replicas`` CPU ones), a
    list one replica per device; with no list, ``replicas`` copies on the default device."""
    if devices in (None, "auto"):
        if devices == "auto" and torch.cuda.is_available():
            found = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            return found[:replicas] if replicas else found
        default = "cuda" if devices is None and torch.cuda.is_available() else "cpu"
        return [default] * (replicas or 1)
    listed = [d.strip() for d in devices.split(",") if d.strip()]
    if not listed or (replicas is not None and replicas != len(listed)):
        raise OFAValueError(
            f"--devices {devices!r}: one device per replica (--replicas {replicas})"
        )
    return listed


class Replicated:
    """An ASGI app dispatching to ``apps`` (replicas of one service) by requests in flight."""

    def __init__(self, apps: Sequence[FastAPI]):
        if not apps:
            raise ValueError("Replicated needs at least one replica")
        self.apps = list(apps)
        self.in_flight = [0] * len(apps)
        self.state = apps[0].state  # the limits uvicorn needs (server_config)
        for i, app in enumerate(apps):
            app.state.prometheus.replica = str(i)
        self.metrics = Merged([app.state.prometheus for app in apps])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"] == "/metrics":
            request = Request(scope, receive)
            if wants_exposition(request):
                await exposition(request, self.metrics)(scope, receive, send)
                return
            chosen = request.query_params.get("replica", "0")  # the JSON report: one replica's
            if chosen.isdigit() and int(chosen) < len(self.apps):
                await self.apps[int(chosen)](scope, receive, send)
                return
        i = min(range(len(self.apps)), key=self.in_flight.__getitem__)
        self.in_flight[i] += 1
        try:
            await self.apps[i](scope, receive, send)
        finally:
            self.in_flight[i] -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start every replica's batcher at startup, close them all at shutdown."""
        async with AsyncExitStack() as stack:
            await receive()  # lifespan.startup
            for app in self.apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


def replicated_app(
    models: Sequence[str | Path], devices: Sequence[str], config: ServeConfig, **load: Any
) -> Replicated:
    """One service per device, each with every model of ``models`` loaded there."""
    return Replicated([create_app(load_models(models, device=d, **load), config) for d in devices])


def serve_replicas(app: Replicated, host: str = "127.0.0.1", port: int = 8000) -> None:
    """``ofa serve --replicas/--devices``: serve :func:`replicated_app` until interrupted."""
    import uvicorn

    check_port(port)
    uvicorn.Server(server_config(app, host=host, port=port)).run()  # type: ignore[arg-type]
