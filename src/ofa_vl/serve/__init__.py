"""The HTTP service (``ofa serve``): a FastAPI app with dynamic batching and a web page.

Needs the ``serve`` extra (``pip install ofa-vl[serve]``).
"""

from .app import ServeConfig, create_app, load_pipelines, running, serve
from .batcher import Batcher, QueueFullError

__all__ = [
    "Batcher",
    "QueueFullError",
    "ServeConfig",
    "create_app",
    "load_pipelines",
    "running",
    "serve",
]
