"""The HTTP API's request and response models (pydantic), shared by the routes and the OpenAPI schema.

A request is an image plus one of the ``*Params`` models below, sent either as multipart form
fields beside an ``image`` file or as a JSON object whose ``image`` is base64. The params know
the task fields and decoding overrides they stand for; the responses know how to read a task's
result dict.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
Box = Annotated[
    list[float],
    Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in original-image pixels"),
]


# --------------------------------------------------------------------------- requests
class CaptionParams(BaseModel):
    """``POST /v1/caption``: describe the image."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, description="a name from GET /v1/models (default: the first)"
    )
    n_best: int | None = Field(
        default=None, ge=1, le=16,
        description="also answer the n best beams (num_return_sequences; at most the beams)",
    )  # fmt: skip

    def task_fields(self) -> dict[str, Any]:
        """The task's text fields (``question``, ``text``, ...)."""
        return {}

    def decoding(self) -> dict[str, Any]:
        """Decoding options overriding the model's defaults."""
        return {} if self.n_best is None else {"num_return_sequences": self.n_best}


class GroundingParams(CaptionParams):
    """``POST /v1/grounding``: the box of the region a text describes."""

    text: Text = Field(description="the referring expression, e.g. 'the red circle'")

    def task_fields(self) -> dict[str, Any]:
        return {"text": self.text}


class OCRParams(CaptionParams):
    """``POST /v1/ocr``: the text in the image (the OFA-CN OCR models)."""


class VQAParams(CaptionParams):
    """``POST /v1/vqa``: answer a question about the image."""

    question: Text

    def task_fields(self) -> dict[str, Any]:
        return {"question": self.question}


class GenerateParams(CaptionParams):
    """``POST /v1/generate``: any instruction, with decoding options."""

    prompt: Text = Field(
        description="the encoder instruction, e.g. 'what does the image describe?'"
    )
    as_boxes: bool = Field(
        default=False, description="also read the output as (<bin> x4, label) regions"
    )
    num_beams: int | None = Field(default=None, ge=1, le=16)
    max_new_tokens: int | None = Field(default=None, ge=1, le=256)
    min_new_tokens: int | None = Field(default=None, ge=0, le=256)
    no_repeat_ngram_size: int | None = Field(default=None, ge=0, le=16)
    length_penalty: float | None = Field(default=None, ge=-10, le=10)
    do_sample: bool | None = None
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    temperature: float | None = Field(default=None, gt=0, le=100)

    def task_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "boxes": self.as_boxes}

    def decoding(self) -> dict[str, Any]:
        base = set(CaptionParams.model_fields) | {"prompt", "as_boxes"}
        return {**super().decoding(), **self.model_dump(exclude=base, exclude_none=True)}


# --------------------------------------------------------------------------- responses
class Prediction(BaseModel):
    model: str = Field(description="the model that answered")
    width: int = Field(description="width of the decoded image (EXIF orientation applied)")
    height: int
    score: float | None = Field(
        default=None,
        description="the model's own score of its answer: the decoder's (length-normalised with "
        "beam search) log-probability of the output, or the best candidate's",
    )
    confidence: float | None = Field(
        default=None, ge=0, le=1,
        description="the answer's probability in [0, 1] (per task: the README's confidence table)",
    )  # fmt: skip
    n_best: list[dict[str, Any]] | None = Field(
        default=None,
        description="with n_best: the n best answers, best first (the first is this one), each "
        "with this response's answer fields, score and confidence",
    )


class CaptionResponse(Prediction):
    caption: str


class GroundingResponse(Prediction):
    text: str
    boxes: list[Box] = Field(description="one box, or none when the model did not answer a box")


class OCRResponse(Prediction):
    text: str = Field(description="the recognised text")


class VQAResponse(Prediction):
    question: str
    answer: str


class GenerateResponse(Prediction):
    prompt: str
    text: str = Field(description="the decoded output (<bin_N> tokens kept)")
    boxes: list[Box] | None = Field(default=None, description="with as_boxes: the regions' boxes")
    labels: list[str] | None = Field(
        default=None, description="with as_boxes: the words after each box"
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_image, queue_full, timeout")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelInfo(BaseModel):
    name: str
    default: bool
    endpoints: list[str] = Field(description="the /v1 endpoints this model answers")
    image_size: dict[str, int] = Field(description="endpoint -> side of the square model input")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    queued: int = Field(description="requests waiting for a batch")
    running: int = Field(description="requests in the batch being decoded")


class LatencyStats(BaseModel):
    count: int = Field(description="requests in the window the percentiles are taken over")
    p50: float
    p90: float
    p99: float


class MetricsResponse(BaseModel):
    requests: dict[str, dict[str, int]] = Field(description="path -> HTTP status -> count")
    latency_ms: dict[str, LatencyStats] = Field(description="path -> latency percentiles")
    batch_sizes: dict[str, int] = Field(description="batch size -> number of batches decoded")
    queued: int
    max_queue: int
