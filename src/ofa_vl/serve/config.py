"""``ServeConfig``: the service's limits, one typed object read by the app, the replicas and the CLI.

This module imports no web framework, so the CLI can build ``ofa serve``'s flags from it cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..arguments import flag
from ..errors import OFAValueError
from ..images import MAX_IMAGE_PIXELS
from ..options import check_counts, max_image_pixels


@dataclass(frozen=True)
class ServeConfig:
    """The service's limits (``ofa serve`` flags)."""

    max_batch: int = flag(8, "most requests decoded together")
    batch_wait_ms: float = flag(10.0, "wait this long for a batch to fill")
    max_queue: int = flag(64, "waiting requests before 503")
    timeout_s: float = flag(
        60.0, "answer 504 when a request is not answered this long after its body"
    )
    max_upload_mb: float = flag(20.0, "largest request body")
    max_pixels: int = flag(
        min(MAX_IMAGE_PIXELS, max_image_pixels()),
        "largest decoded image (width x height), bounded by what decoding it costs",
    )
    read_timeout_s: float = flag(30.0, "408 when the headers and body have not all arrived by then")
    max_connections: int = flag(256, "open connections before uvicorn answers 503")
    decode_slots: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "images decoded at once (default: the CPU cores)"},
    )
    allow_url_images: bool = flag(False, "/v1/chat/completions may fetch http(s) image URLs")

    def __post_init__(self) -> None:
        check_counts(
            max_batch=self.max_batch, max_queue=self.max_queue, max_pixels=self.max_pixels,
            max_connections=self.max_connections, decode_slots=self.decode_slots,
        )  # fmt: skip
        if not self.batch_wait_ms >= 0:
            raise OFAValueError(f"batch-wait-ms must be at least 0, got {self.batch_wait_ms}")
        for name in ("timeout_s", "max_upload_mb", "read_timeout_s"):
            if not getattr(self, name) > 0:
                raise OFAValueError(
                    f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}"
                )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
