"""The HTTP service behind ``ofa serve``: a FastAPI app factory over loaded OFA pipelines.

Every ``POST /v1/<endpoint>`` takes an image (multipart file, or base64 in a JSON body) and the
endpoint's fields; the image is decoded and preprocessed in a thread, then the :class:`Batcher`
decodes it together with concurrent requests of the same model, endpoint and decoding options in
one ``OFAPipeline.predict_batch`` call. Every failure is a JSON ``{"error": {"code", "message"}}``
with a 4xx/5xx status. The web page in ``static/`` is served at ``/``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import socket
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..api import OFAPipeline, get_model
from ..errors import OFAError
from ..images import ImageError, ImageInfo, load_image
from ..options import (
    check_port,
    check_source_length,
)
from ..tasks import Result
from ..tasks.results import AskResult, CaptionResult, GroundingResult, TextResult, VQAResult
from ..zoo import MODELS
from . import prometheus
from . import schemas as S
from .batcher import Batcher, QueueFullError
from .config import ServeConfig
from .limits import TIMED_OUT, uvicorn_config

if TYPE_CHECKING:
    import uvicorn

STATIC = Path(__file__).resolve().parent / "static"
CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer: not a server error


# --------------------------------------------------------------------------- endpoints
@dataclass(frozen=True)
class Endpoint:
    """A ``POST /v1/<name>`` route: its params, its response and the task result that fills it."""

    task: str
    params: type[S.CaptionParams]
    response: type[S.Prediction]
    result: type[Result]  # the task's typed result: its fields name the response's
    summary: str

    def render(self, result: Result) -> dict[str, Any]:
        """The response's own fields, read from the typed result's fields of the same names."""
        assert isinstance(result, self.result), result
        own = set(self.response.model_fields) - set(S.Prediction.model_fields)
        out = {name: getattr(result, name) for name in own | {"score", "confidence"}}
        if result.n_best:  # each alternative with the same fields (n_best of the result type)
            out["n_best"] = [self.render(alt) for alt in result.n_best]
        return out


ENDPOINTS: dict[str, Endpoint] = {
    "caption": Endpoint(
        "caption", S.CaptionParams, S.CaptionResponse, CaptionResult, "Describe an image"
    ),
    "grounding": Endpoint(
        "refcoco", S.GroundingParams, S.GroundingResponse, GroundingResult,
        "Find the region a text describes",
    ),
    "ocr": Endpoint("ocr", S.OCRParams, S.OCRResponse, TextResult, "Read the text in an image"),
    "vqa": Endpoint("vqa", S.VQAParams, S.VQAResponse, VQAResult, "Answer a question"),
    "generate": Endpoint(
        "ask", S.GenerateParams, S.GenerateResponse, AskResult,
        "Run any instruction, with decoding options",
    ),
}  # fmt: skip

ERRORS: dict[int, str] = {
    400: "malformed JSON or multipart body, bad base64, or not a readable image",
    404: "unknown model",
    408: "the request (headers and body) did not arrive within the read timeout",
    413: "upload over the size limit, or image over the pixel cap (decompression bomb)",
    415: "neither multipart/form-data nor application/json",
    422: "a missing, empty, unknown or out-of-range field, or a text too long for the model",
    503: "the queue is full (retry after Retry-After seconds), or too many open connections",
    504: "not answered within the request timeout",
}


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


ErrorRenderer = Callable[[int, str, str, Mapping[str, str] | None], Response]  # an error body


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = S.ErrorResponse(error=S.ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


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


# --------------------------------------------------------------------------- request parsing
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    too_large = ApiError(413, "payload_too_large", f"the upload is over the {limit}-byte limit")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def decode_base64(text: str) -> bytes:
    """Base64 (whitespace ignored, ``data:...;base64,`` prefix allowed) -> bytes, or 400."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, "invalid_base64", f"'image' is not valid base64 ({err})") from err


async def parse_request(request: Request, body: bytes) -> tuple[bytes, dict[str, Any]]:
    """(image bytes, other fields) of a multipart or JSON request."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except ValueError as err:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({err})") from err
        except RecursionError as err:
            raise ApiError(400, "invalid_json", "the JSON body is nested too deeply") from err
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_request", "the JSON body must be an object")
        image = data.pop("image", None)
        if not isinstance(image, str):
            raise ApiError(422, "invalid_request", "'image' must be a base64 string")
        return decode_base64(image), data
    if ctype == "multipart/form-data":

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=32)
        except HTTPException as err:
            raise ApiError(400, "invalid_multipart", str(err.detail)) from err
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "invalid_request", "'image' must be a file part")
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            return await upload.read(), fields
        finally:
            await form.close()
    raise ApiError(
        415, "unsupported_media_type",
        "send multipart/form-data with an 'image' file, or application/json with a base64 'image'",
    )  # fmt: skip


def validate(params: type[BaseModel], fields: dict[str, Any]) -> Any:
    """``params`` from the request's fields, or 422 naming each bad field."""
    if unknown := sorted(set(fields) - set(params.model_fields)):
        raise ApiError(
            422, "invalid_request",
            f"unknown field {', '.join(unknown)}; valid ones: {', '.join(params.model_fields)}",
        )  # fmt: skip
    try:
        return params.model_validate(fields)
    except ValidationError as err:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ApiError(422, "invalid_request", message) from err


def _declared_pixels(data: bytes) -> int:
    """Width x height an image's header declares; 0 when there is no readable header."""
    try:
        with Image.open(BytesIO(data)) as img:
            return img.width * img.height
    except Image.DecompressionBombError:
        return sys.maxsize
    except (OSError, SyntaxError, ValueError, EOFError):
        return 0


class Item(NamedTuple):
    """One preprocessed request, as the batch function receives it."""

    pixels: torch.Tensor  # (3, S, S)
    info: ImageInfo
    fields: dict[str, Any]


def check_request(pipe: OFAPipeline, fields: dict[str, Any], overrides: dict[str, Any]) -> None:
    """What can be known of a request before it joins a batch: its fields, its decoding options
    and its length in tokens (422 otherwise), so that it cannot fail the requests batched with it."""
    try:
        pipe.task.check(fields)
        pipe.decoding(**overrides).check(pipe.model.cfg)
        prompt = pipe.task.prompt(pipe.task.fields_of(fields))
        check_source_length(len(pipe.tokenizer.encode(prompt)), pipe.model.cfg)
    except OFAError as err:
        raise ApiError(422, "invalid_request", str(err)) from err


def prepare(
    data: bytes, pipe: OFAPipeline, max_pixels: int, fields: dict[str, Any]
) -> tuple[Item, tuple[int, int]]:
    """Decode and preprocess one upload for ``pipe``: the batch item and the image's (w, h)."""
    try:
        image = load_image(data, max_pixels=max_pixels)
    except ImageError as err:
        if _declared_pixels(data) > max_pixels:
            raise ApiError(413, "image_too_large", str(err)) from err
        raise ApiError(400, "invalid_image", str(err)) from err
    pixels, info = pipe.preprocess(image)
    return Item(pixels, info, fields), image.size


def predict(pipe: OFAPipeline, overrides: dict[str, Any], items: list[Item]) -> list[Result]:
    """The batch function: one ``predict_batch`` call for all ``items``."""
    images = torch.stack([it.pixels for it in items])
    return pipe.predict_batch(
        images, [it.info for it in items], [it.fields for it in items], **overrides
    )


# --------------------------------------------------------------------------- metrics
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

    def latency_stats(self) -> dict[str, S.LatencyStats]:
        out = {}
        for path, window in self.latencies.items():
            v = sorted(window)
            out[path] = S.LatencyStats(
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
        c: {"model": S.ErrorResponse, "description": ERRORS.get(c, "unavailable")} for c in codes
    }
    if 503 in docs:
        docs[503]["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return docs


class Service:
    """The state behind the routes: models, batcher, metrics."""

    def __init__(self, models: Mapping[str, Mapping[str, OFAPipeline]], config: ServeConfig):
        if not models:
            raise ValueError("serve needs at least one model")
        self.models = models
        self.default = next(iter(models))
        self.config = config
        self.batcher = Batcher(config.max_batch, config.batch_wait_ms / 1000, config.max_queue)
        self.metrics = Metrics()
        self.decode_slots = asyncio.Semaphore(config.decode_slots)  # bounds decoding's memory

    def pipeline(self, model: str | None, endpoint: str) -> tuple[str, OFAPipeline]:
        name = model or self.default
        pipes = self.models.get(name)
        if pipes is None or endpoint not in pipes:
            known = ", ".join(n for n, p in self.models.items() if endpoint in p)
            raise ApiError(
                404, "unknown_model", f"no model {name!r} serves /v1/{endpoint}; known: {known}"
            )
        return name, pipes[endpoint]

    def route(self, endpoint: str) -> Callable[[Request], Awaitable[Response]]:
        """The handler of ``POST /v1/<endpoint>``."""

        async def handler(request: Request) -> Response:
            return await self.respond(request, self._handle(endpoint, request), error_response)

        handler.__name__ = endpoint
        return handler

    async def respond(
        self, request: Request, answer: Awaitable[Response], render: ErrorRenderer
    ) -> Response:
        """``answer``, or the error it raised answered with its status, in ``render``'s shape
        (this API's, or OpenAI's for the chat route)."""
        try:
            return await answer
        except ApiError as err:
            return render(err.status, err.code, err.message, None)
        except OFAError as err:  # found when the request ran alone (the batcher's retry)
            return render(422, "invalid_request", str(err), None)
        except ClientDisconnect:  # nobody reads this; the metrics count it as the client's
            return Response(status_code=408 if request.scope.get(TIMED_OUT) else CLIENT_CLOSED)
        except QueueFullError as err:
            return render(503, "queue_full", str(err), {"Retry-After": str(err.retry_after)})
        except asyncio.TimeoutError:  # noqa: UP041  (not the builtin on Python 3.10)
            return render(504, "timeout", f"not answered within {self.config.timeout_s:g} s", None)

    async def _handle(self, endpoint: str, request: Request) -> Response:
        body = await read_body(request, self.config.max_upload_bytes)
        data, fields = await parse_request(request, body)
        params = validate(ENDPOINTS[endpoint].params, fields)
        name, pipe = self.pipeline(params.model, endpoint)
        return await asyncio.wait_for(
            self._answer(endpoint, name, pipe, data, params), self.config.timeout_s
        )

    async def _answer(
        self, endpoint: str, name: str, pipe: OFAPipeline, data: bytes, params: S.CaptionParams
    ) -> Response:
        result, (width, height) = await self.decode(
            name, endpoint, pipe, data, params.task_fields(), params.decoding()
        )
        answer = ENDPOINTS[endpoint].response(
            model=name, width=width, height=height, **ENDPOINTS[endpoint].render(result)
        )
        return JSONResponse(answer.model_dump())

    async def decode(
        self,
        name: str,
        endpoint: str,
        pipe: OFAPipeline,
        data: bytes,
        fields: dict[str, Any],
        overrides: dict[str, Any],
    ) -> tuple[Result, tuple[int, int]]:
        """One upload checked and preprocessed (within the decode slots), then decoded in the
        batcher with the requests sharing its model, endpoint and options: its result, (w, h)."""
        async with self.decode_slots:
            await asyncio.to_thread(check_request, pipe, fields, overrides)
            item, size = await asyncio.to_thread(
                prepare, data, pipe, self.config.max_pixels, fields
            )
        key = (name, endpoint, tuple(sorted(overrides.items())))
        return await self.batcher.submit(key, partial(predict, pipe, overrides), item), size

    def health(self) -> Response:
        if not self.batcher.alive:
            return error_response(503, "unavailable", "the batch scheduler is not running")
        return JSONResponse(
            S.HealthResponse(queued=self.batcher.queued, running=self.batcher.running).model_dump()
        )

    def model_list(self) -> S.ModelsResponse:
        return S.ModelsResponse(
            default=self.default,
            models=[
                S.ModelInfo(
                    name=name,
                    default=name == self.default,
                    endpoints=list(pipes),
                    image_size={e: pipe.task.image_size for e, pipe in pipes.items()},
                )
                for name, pipes in self.models.items()
            ],
        )

    def metrics_report(self) -> S.MetricsResponse:
        return S.MetricsResponse(
            requests={
                p: {str(s): n for s, n in sorted(c.items())} for p, c in self.metrics.counts.items()
            },
            latency_ms=self.metrics.latency_stats(),
            batch_sizes={str(k): v for k, v in sorted(self.batcher.batch_sizes.items())},
            queued=self.batcher.queued,
            max_queue=self.config.max_queue,
        )


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
    from . import openai  # it builds on this module's request handling

    openai.register(app, service)  # /v1/chat/completions, and /v1/models in OpenAI's shape too
    app.add_api_route(
        "/healthz", service.health, response_model=S.HealthResponse,
        responses=_error_docs([503]), summary="Liveness",
    )  # fmt: skip
    app.state.prometheus = prometheus.instrument(service)  # GET /metrics: exposition or JSON
    app.add_api_route(
        "/metrics", prometheus.metrics_route(service, app.state.prometheus),
        response_model=S.MetricsResponse, summary="Counters (JSON), or Prometheus' text format",
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
