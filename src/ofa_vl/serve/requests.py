"""Reading a request of ``ofa serve``: its body within the size limit, its multipart or JSON
fields, its base64 image, its params validated, and the one error type every route answers.

Every failure here is an :class:`ApiError`, answered as ``{"error": {"code", "message"}}`` with
its status (:data:`ERRORS` documents each status in the OpenAPI schema).
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from ..images import ImageError, load_image
from .reports import ErrorDetail, ErrorResponse

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
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


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
    """``params`` from the request's fields (by their HTTP names), or 422 naming each bad field."""
    names = [f.alias or name for name, f in params.model_fields.items()]
    if unknown := sorted(set(fields) - set(names)):
        raise ApiError(
            422, "invalid_request",
            f"unknown field {', '.join(unknown)}; valid ones: {', '.join(names)}",
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


def read_image(data: bytes, max_pixels: int) -> Image.Image:
    """An upload's image: 413 over ``max_pixels`` (a decompression bomb), 400 if unreadable."""
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageError as err:
        if _declared_pixels(data) > max_pixels:
            raise ApiError(413, "image_too_large", str(err)) from err
        raise ApiError(400, "invalid_image", str(err)) from err
