"""The service's own answers beside the task routes': errors, health, the model list, metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


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
