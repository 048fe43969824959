"""The request and response models of the OpenAI-compatible routes (:mod:`.openai`): OpenAI's
Chat Completions and Models shapes, with this service's extras (``task``, ``boxes``, ``labels``,
``score``, ``confidence``) beside OpenAI's fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .reports import ModelsResponse
from .schemas import limits

Box = Annotated[
    list[float],
    Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in original-image pixels"),
]


# --------------------------------------------------------------------------- requests
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str = Field(description="a data:image/...;base64 URL (http(s) with --allow-url-images)")
    detail: str | None = Field(default=None, description="accepted, unused")


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


# the bounds of the options these stand for, as /v1/<task> declares them (GenerationConfig's)
NBest = Annotated[int, Field(**limits("num_return_sequences"))]
NewTokens = Annotated[int, Field(**limits("max_new_tokens"))]
TopP = Annotated[float, Field(**limits("top_p"))]
Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``; other fields are the task's own (``/v1/<task>``'s)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="NAME (the free instruction) or NAME:TASK, see GET /v1/models")
    messages: list[ChatMessage] = Field(min_length=1)
    task: str | None = Field(default=None, description="the task, instead of NAME:TASK")
    n: NBest = Field(default=1, description="the n best beams (at most the beams)")
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=0, description="only 0")
    max_tokens: NewTokens | None = Field(default=None, description="generate only")
    max_completion_tokens: NewTokens | None = None
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="generate only: > 0 samples, 0 keeps the search"
    )
    top_p: TopP | None = Field(default=None, description="generate only: samples")
    stream: Literal[False] | None = Field(default=None, description="not supported")
    user: str | None = None


# --------------------------------------------------------------------------- responses
class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] = Field(description="each generated token, </s> included")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    boxes: list[Box] | None = Field(default=None, description="grounding, generate: regions")
    labels: list[str] | None = Field(default=None, description="generate with boxes")


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None
    score: float | None = Field(default=None, description="the model's own (see /v1/<task>)")
    confidence: float | None = None


class Usage(BaseModel):
    prompt_tokens: int = Field(description="the instruction's tokens (the image is not counted)")
    completion_tokens: int = Field(description="every choice's generated tokens, </s> included")
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx)")
    param: str | None = None
    code: str = Field(description="the service's error code (invalid_image, queue_full, ...)")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    id: str = Field(description="NAME (free instruction) or NAME:TASK")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ofa-vl"


class ModelList(ModelsResponse):
    """The service's model list with OpenAI's fields beside it (``object``, ``data``)."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
