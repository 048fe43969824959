"""OpenAI-compatible routes of ``ofa serve``: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The shapes are OpenAI's Chat Completions API (what vLLM, mlx-vlm and LitServe's ``OpenAISpec``
serve), so the official ``openai`` client and Ray Data LLM's HTTP processor use a model as is.
A request is one user message with text and one ``image_url`` part (a ``data:`` URL; ``http(s)``
only with ``--allow-url-images``). ``model`` picks the model and the task: ``NAME`` runs the
message's text as the free instruction (the ``ask`` task, ``/v1/generate``), ``NAME:TASK`` (or
``NAME`` with an extra ``"task"`` field) one of ``caption``, ``grounding``, ``ocr``, ``vqa``,
``generate``, the text being its question or referring expression. Each request goes through the
service's own limits and batcher (:class:`~.service.Service`), as ``/v1/<task>`` requests do; errors
keep their statuses and come in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..tasks import Result
from ..tasks.results import AskResult, CaptionResult, GroundingResult, TextResult, VQAResult
from .openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    Choice,
    ChoiceLogprobs,
    ImagePart,
    ModelCard,
    ModelList,
    OpenAIErrorDetail,
    OpenAIErrorResponse,
    TextPart,
    TokenLogprob,
    Usage,
)
from .requests import ERRORS, ApiError, decode_base64, read_body, validate
from .service import ENDPOINTS, Service

CHAT = "/v1/chat/completions"
DEFAULT_TASK = "generate"  # a bare model name: the message's text is the free instruction
TEXT_FIELD = {"grounding": "text", "vqa": "question", "generate": "prompt"}  # caption, ocr: none
ANSWER = {CaptionResult: "caption", VQAResult: "answer", TextResult: "text", AskResult: "text"}
CREATED = int(time.time())  # /v1/models' "created": when the service loaded its models


def openai_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = OpenAIErrorResponse(error=OpenAIErrorDetail(message=message, type=kind, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


# --------------------------------------------------------------------------- parsing
def parse_json(request: Request, body: bytes) -> dict[str, Any]:
    """The JSON object of the body, or 415 / 400 / 422."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the JSON body must be an object")
    return data


def split_model(chat: ChatRequest) -> tuple[str, str]:
    """(served model name, endpoint) that ``model`` (NAME or NAME:TASK) and ``task`` name."""
    name, _, task = chat.model.rpartition(":") if ":" in chat.model else (chat.model, "", "")
    if task and chat.task and task != chat.task:
        raise ApiError(422, "invalid_request", f"model names task {task!r}, task {chat.task!r}")
    return name, task or chat.task or DEFAULT_TASK


def message_parts(messages: list[ChatMessage]) -> tuple[str, str]:
    """(the user message's text, its image URL); system and developer messages are ignored."""
    talk = [m for m in messages if m.role not in ("system", "developer")]
    if len(talk) != 1 or talk[0].role != "user":
        raise ApiError(422, "invalid_request", "send one user message (no multi-turn chats)")
    content = talk[0].content
    parts = [TextPart(type="text", text=content)] if isinstance(content, str) else content or []
    urls = [p.image_url.url for p in parts if isinstance(p, ImagePart)]
    if len(urls) != 1:
        raise ApiError(422, "invalid_request", f"send one image_url part, got {len(urls)}")
    return " ".join(p.text.strip() for p in parts if isinstance(p, TextPart)).strip(), urls[0]


def task_fields(
    chat: ChatRequest, endpoint: str, text: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """The ``/v1/<endpoint>`` params the chat request stands for (OpenAI's names mapped)."""
    fields: dict[str, Any] = {**extra}
    if endpoint in TEXT_FIELD:
        fields[TEXT_FIELD[endpoint]] = text
    if chat.n > 1:
        fields["n_best"] = chat.n
    if (max_tokens := chat.max_completion_tokens or chat.max_tokens) is not None:
        fields["max_new_tokens"] = max_tokens
    if chat.temperature:  # 0 (a common client default) keeps the model's deterministic search
        fields |= {"do_sample": True, "temperature": chat.temperature}
    if chat.top_p is not None:
        fields |= {"do_sample": True, "top_p": chat.top_p}
    return fields


async def fetch_image(url: str, allowed: bool, limit: int, timeout_s: float) -> bytes:
    """The bytes of a ``data:`` URL, or of an ``http(s)`` one when ``allowed`` (413 past ``limit``)."""
    if url.startswith("data:"):
        if ";base64," not in url.partition(",")[0] + ",":
            raise ApiError(400, "invalid_image_url", "a data: URL must be base64 (;base64,)")
        return decode_base64(url)
    if not url.startswith(("http://", "https://")):
        raise ApiError(400, "invalid_image_url", "image_url must be a data: or http(s) URL")
    if not allowed:
        raise ApiError(400, "url_images_refused", "http(s) image URLs need --allow-url-images")
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http, http.stream("GET", url) as r:
            r.raise_for_status()
            data = bytearray()
            async for chunk in r.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise ApiError(413, "payload_too_large", f"the image is over {limit} bytes")
            return bytes(data)
    except httpx.HTTPError as err:
        raise ApiError(400, "image_url_unreachable", f"could not fetch the image: {err}") from err


# --------------------------------------------------------------------------- answering
def choice(index: int, result: Result, eos: str, logprobs: bool) -> Choice:
    """One OpenAI choice from a typed result (``token_logprobs`` requested by the route)."""
    tokens = result.token_logprobs or []
    if isinstance(result, GroundingResult):
        text = " ".join("[" + ", ".join(f"{v:.1f}" for v in box) + "]" for box in result.boxes)
        message = AssistantMessage(content=text, boxes=result.boxes)
    else:
        message = AssistantMessage(content=getattr(result, ANSWER[type(result)]))
        if isinstance(result, AskResult):
            message.boxes, message.labels = result.boxes, result.labels
    content = [
        TokenLogprob(token=t.token, logprob=t.logprob, bytes=list(t.token.encode())) for t in tokens
    ]
    return Choice(
        index=index, message=message, score=result.score, confidence=result.confidence,
        finish_reason="stop" if tokens and tokens[-1].token == eos else "length",
        logprobs=ChoiceLogprobs(content=content) if logprobs else None,
    )  # fmt: skip


class ChatRoute:
    """``POST /v1/chat/completions`` over a :class:`~.service.Service`."""

    def __init__(self, service: Service):
        self.service = service

    async def __call__(self, request: Request) -> Response:
        return await self.service.respond(request, self.handle(request), openai_error)

    async def handle(self, request: Request) -> Response:
        """Read and validate the chat request, then answer it within the service's deadline."""
        body = await read_body(request, self.service.config.max_upload_bytes)
        data = parse_json(request, body)
        own = {k: data.pop(k) for k in list(data) if k in ChatRequest.model_fields}
        chat = validate(ChatRequest, own)
        return await asyncio.wait_for(self.answer(chat, data), self.service.config.timeout_s)

    async def answer(self, chat: ChatRequest, extra: dict[str, Any]) -> Response:
        """Parse, check, decode in the service's batcher, answer (within the route's deadline)."""
        service, config = self.service, self.service.config
        name, endpoint = split_model(chat)
        if endpoint not in ENDPOINTS:
            raise ApiError(
                404, "unknown_model", f"no task {endpoint!r}; tasks: {', '.join(ENDPOINTS)}"
            )
        name, pipe = service.pipeline(name, endpoint)
        text, url = message_parts(chat.messages)
        spec = ENDPOINTS[endpoint]
        params = validate(spec.params, task_fields(chat, endpoint, text, extra))
        fields, overrides = spec.split(params)
        image = await fetch_image(
            url, config.allow_url_images, config.max_upload_bytes, config.read_timeout_s
        )
        result, _, prompt_tokens = await service.decode(
            name, endpoint, pipe, image, fields, {**overrides, "output_scores": True}
        )
        eos = pipe.tokenizer.decode([pipe.tokenizer.eos_token_id], skip_special_tokens=False)
        choices = [
            choice(i, r, eos, chat.logprobs) for i, r in enumerate(result.n_best or [result])
        ]
        completion = sum(len(r.token_logprobs or []) for r in result.n_best or [result])
        answer = ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=chat.model,
            choices=choices,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                        total_tokens=prompt_tokens + completion),
        )  # fmt: skip
        return JSONResponse(answer.model_dump())


def model_list(service: Service) -> Callable[[], Awaitable[ModelList]]:
    """``GET /v1/models``: the service's list, and OpenAI's ``data`` (NAME and NAME:TASK ids)."""

    async def models() -> ModelList:
        own = service.model_list()
        data = [ModelCard(id=m.name, created=CREATED) for m in own.models]
        data += [
            ModelCard(id=f"{m.name}:{e}", created=CREATED) for m in own.models for e in m.endpoints
        ]
        return ModelList(**own.model_dump(), data=data)

    return models


def register(app: FastAPI, service: Service) -> None:
    """Add ``GET /v1/models`` and ``POST /v1/chat/completions`` to ``app``."""
    app.add_api_route(
        "/v1/models", model_list(service), response_model=ModelList, summary="Loaded models"
    )
    errors: dict[int | str, dict[str, Any]] = {
        c: {"model": OpenAIErrorResponse, "description": d} for c, d in ERRORS.items()
    }
    app.add_api_route(
        CHAT, ChatRoute(service), methods=["POST"], response_model=ChatCompletion,
        responses=errors, summary="OpenAI chat completions with an image_url part",
        description=(ChatRequest.__doc__ or "").strip(),
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "description": "OpenAI's chat completion request"}}}}},
    )  # fmt: skip
