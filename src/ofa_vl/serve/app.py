"""The HTTP service behind ``ofa serve``: a FastAPI app factory over loaded OFA pipelines, and
running it with uvicorn.

Every ``POST /v1/<endpoint>`` (:mod:`.service`) takes an image (multipart file, or base64 in a
JSON body, :mod:`.requests`) and the endpoint's fields (:mod:`.schemas`); the OpenAI-compatible
routes come from :mod:`.openai`, ``GET /metrics`` from :mod:`.prometheus` and :mod:`.metrics`.
Every failure is a JSON ``{"error": {"code", "message"}}`` with a 4xx/5xx status. The web page in
``static/`` is served at ``/``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..api import OFAPipeline, get_model
from ..options import check_port
from ..zoo import MODELS
from . import openai, prometheus
from .config import ServeConfig
from .limits import uvicorn_config
from .metrics import MetricsMiddleware
from .reports import ErrorResponse, HealthResponse, MetricsResponse
from .requests import ERRORS, error_response
from .service import ENDPOINTS, Service

if TYPE_CHECKING:
    import uvicorn

STATIC = Path(__file__).resolve().parent / "static"


# --------------------------------------------------------------------------- models
def load_pipelines(
    name_or_path: str | Path,
    *,
    tokenizer: str | Path | None = None,
    device: str | torch.device | None = None,
    compile: bool = False,
    backend: str = "torch",
    **task_options: Any,
) -> dict[str, OFAPipeline]:
    """One network behind a pipeline per endpoint, each task with the model's own defaults.

    ``task_options`` (e.g. ``image_size``) apply to every task; ``compile``, ``backend``: see
    ``get_model``.
    """
    first = get_model(
        name_or_path, device=device, tokenizer=tokenizer, compile=compile, backend=backend,
        **task_options,
    )  # fmt: skip
    # one network; each task keeps the zoo card's options for it
    return {e: first.with_task(spec.task, **task_options) for e, spec in ENDPOINTS.items()}


# --------------------------------------------------------------------------- the app
def _request_body(params: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody``: the params plus the image, as multipart or as JSON."""
    schema = params.model_json_schema()

    def with_image(image: dict[str, Any]) -> dict[str, Any]:
        props = {"image": image, **schema["properties"]}
        return {**schema, "properties": props, "required": ["image", *schema.get("required", [])]}

    file = {"type": "string", "contentMediaType": "application/octet-stream"}
    b64 = {"type": "string", "contentEncoding": "base64", "description": "base64 or a data: URL"}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": with_image(file)},
            "application/json": {"schema": with_image(b64)},
        },
    }


def _error_docs(codes: Sequence[int]) -> dict[int | str, dict[str, Any]]:
    docs: dict[int | str, dict[str, Any]] = {
        c: {"model": ErrorResponse, "description": ERRORS.get(c, "unavailable")} for c in codes
    }
    if 503 in docs:
        docs[503]["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return docs


def create_app(
    models: Mapping[str, Mapping[str, OFAPipeline]], config: ServeConfig | None = None
) -> FastAPI:
    """The FastAPI app serving ``models`` (name -> endpoint -> pipeline; the first is the default).

    Build ``models`` with :func:`load_pipelines`.
    """
    config = config or ServeConfig()
    service = Service(models, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        yield
        await service.batcher.close()

    app = FastAPI(
        title="ofa-vl",
        summary="OFA vision-language models: caption, grounding, OCR, VQA, free instructions",
        lifespan=lifespan,
    )
    app.state.serve_config = config  # the connection limits uvicorn needs (server_config)
    for endpoint, spec in ENDPOINTS.items():
        app.add_api_route(
            f"/v1/{endpoint}",
            service.route(endpoint),
            methods=["POST"],
            response_model=spec.response,
            responses=_error_docs(sorted(ERRORS)),
            summary=spec.summary,
            description=(spec.params.__doc__ or "").strip(),
            openapi_extra={"requestBody": _request_body(spec.params)},
        )
    openai.register(app, service)  # /v1/chat/completions, and /v1/models in OpenAI's shape too
    app.add_api_route(
        "/healthz", service.health, response_model=HealthResponse,
        responses=_error_docs([503]), summary="Liveness",
    )  # fmt: skip
    app.state.prometheus = prometheus.instrument(service)  # GET /metrics: exposition or JSON
    app.add_api_route(
        "/metrics", prometheus.metrics_route(service, app.state.prometheus),
        response_model=MetricsResponse, summary="Counters (JSON), or Prometheus' text format",
        responses={200: {"content": {"text/plain": {}}}},
    )  # fmt: skip
    app.add_api_route("/", lambda: FileResponse(STATIC / "index.html"), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), err.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> Response:  # uvicorn logs it
        return error_response(500, "internal_error", f"{type(err).__name__}: {err}")

    paths = frozenset(r.path for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, paths=paths)  # type: ignore[arg-type]
    return app


# --------------------------------------------------------------------------- running it
def serve(
    models: Sequence[str | Path],
    *,
    tokenizer: str | Path | None = None,
    device: str | None = None,
    compile: bool = False,
    backend: str = "torch",
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
) -> None:
    """Load ``models`` and serve them with uvicorn until interrupted (``ofa serve``)."""
    import uvicorn

    check_port(port)
    config = config or ServeConfig()
    loaded = load_models(
        models, tokenizer=tokenizer, device=device, compile=compile, backend=backend
    )
    app = create_app(loaded, config)
    uvicorn.Server(server_config(app, host=host, port=port)).run()


def load_models(models: Sequence[str | Path], **load: Any) -> dict[str, dict[str, OFAPipeline]]:
    """Every model of ``models`` under its :func:`served_name` (``load``: :func:`load_pipelines`'s
    keywords)."""
    loaded: dict[str, dict[str, OFAPipeline]] = {}
    for m in models:
        loaded[served_name(m, loaded)] = load_pipelines(m, **load)
    return loaded


def served_name(ref: str | Path, taken: Collection[str] = ()) -> str:
    """A model's name in the API: its zoo name or hub id, else its folder or file name (never
    the absolute path of a file on the server), made unique among ``taken``."""
    text = str(ref)
    path = Path(text)
    name = text
    if text not in MODELS and path.exists():
        name = (
            path.parent.name
            if path.is_file() and path.stem in ("model", "pytorch_model")
            else path.stem
        )
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    return unique


def server_config(app: FastAPI, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's config for ``app`` with the service's connection limits (:mod:`.limits`)."""
    config: ServeConfig = app.state.serve_config
    return uvicorn_config(
        app, read_timeout_s=config.read_timeout_s, max_connections=config.max_connections,
        shutdown_timeout_s=config.timeout_s, **kwargs,
    )  # fmt: skip


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread on a free port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    server = uvicorn.Server(server_config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
