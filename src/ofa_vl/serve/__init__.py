"""The HTTP service (``ofa serve``): a FastAPI app with dynamic batching and a web page.

Needs the ``serve`` extra (``pip install ofa-vl[serve]``). Names are imported on first use, so
``ofa_vl.serve.config`` (the limits, read by the CLI) loads without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Batcher": "batcher",
    "QueueFullError": "batcher",
    "ServeConfig": "config",
    "create_app": "app",
    "load_pipelines": "app",
    "running": "app",
    "serve": "app",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
