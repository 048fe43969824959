"""The task routes of ``ofa serve`` and the state behind every route (:class:`Service`).

Each ``POST /v1/<endpoint>`` is an :class:`Endpoint`: a task whose ``Fields``, decoding options
and ``Result`` give its request and response models (:mod:`.schemas`). A request's decoding
options are checked, its image decoded and preprocessed, and its fields checked, normalised and
tokenized once (``OFAPipeline.prepare``) in a thread, before it joins a batch; the
:class:`~.batcher.Batcher` then decodes it together with concurrent requests of the same model,
endpoint and options in one ``OFAPipeline.predict_prepared`` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from ..api import OFAPipeline
from ..errors import OFAError
from ..generation import GenerationConfig
from ..tasks import TASKS, Result
from ..tasks.runners import Prepared
from .batcher import Batcher, QueueFullError
from .config import ServeConfig
from .limits import TIMED_OUT
from .metrics import Metrics
from .reports import HealthResponse, MetricsResponse, ModelInfo, ModelsResponse
from .requests import (
    ApiError,
    ErrorRenderer,
    error_response,
    parse_request,
    read_body,
    read_image,
    validate,
)
from .schemas import DECODING, Prediction, request_model, response_model

CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer: not a server error


@dataclass(frozen=True)
class Endpoint:
    """A ``POST /v1/<name>`` route: its task, and the request and response models derived from
    the task's ``Fields`` (plus ``decoding`` options) and ``Result``."""

    task: str
    summary: str
    params: type[BaseModel]
    response: type[Prediction]
    fields: tuple[str, ...]  # the task's field names among the params
    decoding: tuple[str, ...]  # the decoding options among them

    @classmethod
    def of(
        cls, name: str, task: str, summary: str, decoding: tuple[str, ...], hidden: tuple[str, ...]
    ) -> Endpoint:
        """The endpoint ``name`` of ``task`` (``hidden``: result flags that are no answer)."""
        spec, doc = TASKS[task], f"``POST /v1/{name}``: {summary[0].lower()}{summary[1:]}."
        assert spec.result_type is not None, task
        params = request_model(f"{name.title()}Params", spec.Fields, decoding, doc)
        response = response_model(spec.result_type, hidden)
        return cls(task, summary, params, response, spec.fields(), decoding)

    def split(self, params: BaseModel) -> tuple[dict[str, Any], dict[str, Any]]:
        """(task fields, decoding overrides) of validated params; options not given are left out."""
        given = params.model_dump(exclude_none=True)
        fields = {k: given[k] for k in self.fields if k in given}
        return fields, {k: given[k] for k in self.decoding if k in given}

    def render(self, result: Result) -> dict[str, Any]:
        """The response's own fields, read from the typed result's fields of the same names."""
        own = set(self.response.model_fields) - set(Prediction.model_fields)
        out = {name: getattr(result, name) for name in own | {"score", "confidence"}}
        if result.n_best:  # each alternative with the same fields (n_best of the result type)
            out["n_best"] = [self.render(alt) for alt in result.n_best]
        return out


N_BEST = ("num_return_sequences",)  # every endpoint: HTTP ``n_best``
ENDPOINTS: dict[str, Endpoint] = {
    "caption": Endpoint.of("caption", "caption", "Describe an image", N_BEST, ()),
    "grounding": Endpoint.of(
        "grounding", "refcoco", "Find the region a text describes", N_BEST, ()
    ),
    "ocr": Endpoint.of("ocr", "ocr", "Read the text in an image", N_BEST, ()),
    # VQAResult.with_score: how its to_dict reads, no answer
    "vqa": Endpoint.of("vqa", "vqa", "Answer a question", N_BEST, ("with_score",)),
    "generate": Endpoint.of(
        "generate", "ask", "Run any instruction, with decoding options", tuple(DECODING), ()
    ),
}


class Item(NamedTuple):
    """One prepared request, as the batch function receives it."""

    pixels: torch.Tensor  # (3, S, S)
    query: Prepared  # fields normalised, prompt tokenized and its length checked


class Decoded(NamedTuple):
    """A decoded request: its result, its image's (width, height), its instruction's tokens."""

    result: Result
    size: tuple[int, int]
    prompt_tokens: int


def decoding(pipe: OFAPipeline, overrides: dict[str, Any]) -> GenerationConfig:
    """The request's decoding config, checked against the model (422 otherwise)."""
    try:
        config = pipe.decoding(**overrides)
        config.check(pipe.model.cfg)
    except OFAError as err:
        raise ApiError(422, "invalid_request", str(err)) from err
    return config


def prepare(
    data: bytes, pipe: OFAPipeline, max_pixels: int, fields: dict[str, Any]
) -> tuple[Item, tuple[int, int]]:
    """Decode and preprocess one upload for ``pipe``, then check, normalise and tokenize its
    fields once (422 otherwise), so it cannot fail the requests batched with it: the batch item
    and the image's (w, h)."""
    image = read_image(data, max_pixels)
    pixels, info = pipe.preprocess(image)
    try:
        query = pipe.prepare(fields, info)
    except OFAError as err:
        raise ApiError(422, "invalid_request", str(err)) from err
    return Item(pixels, query), image.size


def predict(pipe: OFAPipeline, config: GenerationConfig, items: list[Item]) -> list[Result]:
    """The batch function: one ``predict_prepared`` call for all ``items``."""
    images = torch.stack([it.pixels for it in items])
    return pipe.predict_prepared(images, [it.query for it in items], config)


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
        self, endpoint: str, name: str, pipe: OFAPipeline, data: bytes, params: BaseModel
    ) -> Response:
        spec = ENDPOINTS[endpoint]
        result, (width, height), _ = await self.decode(
            name, endpoint, pipe, data, *spec.split(params)
        )
        answer = spec.response(model=name, width=width, height=height, **spec.render(result))
        return JSONResponse(answer.model_dump())

    async def decode(
        self,
        name: str,
        endpoint: str,
        pipe: OFAPipeline,
        data: bytes,
        fields: dict[str, Any],
        overrides: dict[str, Any],
    ) -> Decoded:
        """One upload checked and prepared (within the decode slots), then decoded in the batcher
        with the requests sharing its model, endpoint and options."""
        async with self.decode_slots:
            config = decoding(pipe, overrides)
            item, size = await asyncio.to_thread(
                prepare, data, pipe, self.config.max_pixels, fields
            )
        key = (name, endpoint, tuple(sorted(overrides.items())))
        result = await self.batcher.submit(key, partial(predict, pipe, config), item)
        return Decoded(result, size, len(item.query.input_ids))

    def health(self) -> Response:
        if not self.batcher.alive:
            return error_response(503, "unavailable", "the batch scheduler is not running")
        return JSONResponse(
            HealthResponse(queued=self.batcher.queued, running=self.batcher.running).model_dump()
        )

    def model_list(self) -> ModelsResponse:
        return ModelsResponse(
            default=self.default,
            models=[
                ModelInfo(
                    name=name,
                    default=name == self.default,
                    endpoints=list(pipes),
                    image_size={e: pipe.task.image_size for e, pipe in pipes.items()},
                )
                for name, pipes in self.models.items()
            ],
        )

    def metrics_report(self) -> MetricsResponse:
        return MetricsResponse(
            requests={
                p: {str(s): n for s, n in sorted(c.items())} for p, c in self.metrics.counts.items()
            },
            latency_ms=self.metrics.latency_stats(),
            batch_sizes={str(k): v for k, v in sorted(self.batcher.batch_sizes.items())},
            queued=self.batcher.queued,
            max_queue=self.config.max_queue,
        )
