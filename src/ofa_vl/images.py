"""Image loading and OFA preprocessing.

:func:`load_image` turns a path, URL, bytes, PIL image or numpy array into an 8-bit RGB PIL image,
rejecting corrupt files and decompression bombs with :class:`ImageError`. :func:`preprocess`
reproduces mmpretrain's OFA test pipelines (``LoadImageFromFile`` with cv2, mmcv ``Resize``, then
``(x - mean) / std``) pixel for pixel, without depending on OpenCV.
"""

from __future__ import annotations

import functools
import http.client
import io
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import OFAFileNotFoundError, OFAValueError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGE_SUFFIXES",
    "IMAGENET_STD",
    "OFA_MEAN",
    "OFA_STD",
    "ImageError",
    "ImageInfo",
    "ImageSource",
    "load_image",
    "load_resized",
    "normalize",
    "ocr_resize",
    "preprocess",
    "preprocess_batch",
    "resize",
    "resize_cv2_bilinear",
]

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # of a folder
MAX_IMAGE_PIXELS = 89_478_485  # cap on decoded width*height; PIL's own default
URL_TIMEOUT_S = 10.0
MAX_URL_BYTES = 64 * 2**20

# OFA:data/mm_data/*_dataset.py mean=std=0.5 everywhere, except ImageNet (timm's defaults, OFA-NOTES 2.1)
OFA_MEAN = (0.5, 0.5, 0.5)
OFA_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_COEF_BITS = 11  # OpenCV imgproc/resize.cpp INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


class Interpolation(str, Enum):
    """How an image is resized to the model's square input."""

    BILINEAR = "bilinear"  # cv2 INTER_LINEAR, bit-exact (mmcv Resize in mmpretrain's configs)
    BICUBIC = "bicubic"  # Pillow BICUBIC (torchvision Resize in the official OFA)
    OCR = "ocr"  # OFA's OCR resize: aspect kept, edge-padded to a square
    OCR_DOCUMENT = "ocr_document"  # a document line folded into 4 rows

    @classmethod
    def parse(cls, value: Interpolation | str) -> Interpolation:
        """A member from itself or its name; one clear error for anything else."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(repr(m.value) for m in cls)
            raise OFAValueError(f"interpolation must be one of {names}, got {value!r}") from None


class ImageError(OFAValueError):
    """An input that cannot be turned into an RGB image (corrupt, unsupported, too large, unreachable)."""


@dataclass(frozen=True)
class ImageInfo:
    """What preprocessing did to one image, as mmcv's ``Resize`` reports it."""

    ori_shape: tuple[int, int]  # (h, w) of the loaded image
    scale_factor: tuple[float, float]  # (w_scale, h_scale) = new / original


def load_image(
    src: ImageSource,
    *,
    max_pixels: int | None = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> Image.Image:
    """Load ``src`` as an 8-bit RGB PIL image (a new image; inputs are never modified).

    Accepts a path, an ``http(s)://`` URL, encoded bytes, a PIL image, or a numpy array (HxW,
    HxWx3 or HxWx4 RGB(A), not cv2's BGR; uint8, uint16, or float in [0, 1]). EXIF orientation is
    applied and alpha dropped without compositing, as ``cv2.imread(IMREAD_COLOR)`` does; 16-bit
    values keep their high byte (libpng ``png_set_strip_16``, used by cv2).

    Args:
        max_pixels: cap on the decoded size of encoded inputs (default ``MAX_IMAGE_PIXELS``).
        timeout: URL timeout in seconds (default ``URL_TIMEOUT_S``).
        max_bytes: cap on a URL download (default ``MAX_URL_BYTES``).

    Raises:
        ImageError: unreadable, corrupt, over the caps, or (URLs) unreachable.
        FileNotFoundError: a path that does not exist.
        TypeError: an unsupported input type.
    """
    cap = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(src, Image.Image):
        with _reading("the PIL image"):
            return _to_rgb(src, "the PIL image")
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, bytes | bytearray | memoryview):
        return _decode(io.BytesIO(src), "the image data", cap)
    if isinstance(src, str) and src.startswith(("http://", "https://")):
        data = _fetch(
            src,
            URL_TIMEOUT_S if timeout is None else timeout,
            MAX_URL_BYTES if max_bytes is None else max_bytes,
        )
        return _decode(io.BytesIO(data), src, cap)
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        if not path.is_file():
            raise OFAFileNotFoundError(f"image file not found: {path}")
        with path.open("rb") as fp:
            return _decode(fp, str(path), cap)
    raise TypeError(f"cannot load an image from {type(src).__name__}")


def _fetch(url: str, timeout: float, max_bytes: int) -> bytes:
    too_large = ImageError(f"image at {url} is larger than the {max_bytes}-byte limit")
    request = urllib.request.Request(url, headers={"User-Agent": "ofa-vl"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if int(response.headers.get("Content-Length") or 0) > max_bytes:
                raise too_large
            data: bytes = response.read(max_bytes + 1)
    except ImageError:
        raise
    except urllib.error.HTTPError as err:
        raise ImageError(f"could not fetch image {url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise ImageError(f"could not fetch image {url}: {err.reason}") from err
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ImageError(f"could not fetch image {url}: {err or type(err).__name__}") from err
    if len(data) > max_bytes:
        raise too_large
    return data


def _check_pixels(size: tuple[int, int], cap: int, name: str) -> None:
    if size[0] * size[1] > cap:
        raise ImageError(
            f"{name} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, over the "
            f"{cap}-pixel cap (possible decompression bomb)"
        )


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn PIL's decoding errors into one-line :class:`ImageError` naming the source."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name} is too large to decode safely: {err}") from err
    except Image.UnidentifiedImageError as err:  # its message holds the file object's repr
        raise ImageError(f"{name} is not a readable image (unknown format)") from err
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001  Pillow's parsers raise any type on fuzzed input
        # (NotImplementedError for half-supported DDS, struct.error, IndexError, ...)
        raise ImageError(f"{name} is not a readable image ({err or type(err).__name__})") from err


def _decode(fp: IO[bytes], name: str, cap: int) -> Image.Image:
    with _reading(name), warnings.catch_warnings():
        # Our own cap replaces PIL's warning; PIL still raises DecompressionBombError at 2x its limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(fp) as img:
            _check_pixels(img.size, cap, name)
            img.load()
            return _to_rgb(img, name)


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    img = ImageOps.exif_transpose(img)  # cv2.imread applies EXIF orientation too
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        high = np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8  # cv2: png_set_strip_16
        img = Image.fromarray(high.astype(np.uint8))
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # palette (with transparency) -> colours
    try:
        return img.convert("RGB")  # drops alpha without compositing, like cv2 IMREAD_COLOR
    except ValueError as err:
        raise ImageError(f"{name} has mode {img.mode}, which cannot be converted to RGB") from err


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageError(f"numpy image must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.ndim == 3:
        arr = arr[..., :3]
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not (np.isfinite(arr).all() and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 1):
            raise ImageError("float numpy images must hold values in [0, 1]")
        arr = np.rint(arr * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"numpy image dtype must be uint8, uint16 or float, got {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")


def _linear_coeffs(
    src: int, dst: int, clamp_weights: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit fixed-point weights of cv2's INTER_LINEAR along one axis."""
    # OpenCV imgproc/resize.cpp resize(): fx = (float)((dx + 0.5) * scale - 0.5), half-pixel centres
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = f - i0.astype(np.float32)
    if clamp_weights:  # x only: OpenCV pins the weights at the borders; y keeps them, clipping rows
        f[i0 < 0] = 0
        i0 = np.maximum(i0, 0)
        f[i0 >= src - 1] = 0
    w1 = np.rint(f * _COEF_SCALE).astype(np.int32)  # saturate_cast<short>(cvRound)
    w0 = np.rint((np.float32(1) - f) * _COEF_SCALE).astype(np.int32)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def resize_cv2_bilinear(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)`` for uint8 HxW or HxWxC images.

    ``size`` is S (square) or ``(h, w)``. Reproduces OpenCV's fixed-point arithmetic (11-bit
    weights, the SIMD vertical pass ``VResizeLinearVec_32s8u``): half-pixel centres, no antialias.
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 HxW or HxWxC array, got {img.dtype} {img.shape}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    src = img.astype(np.int32).reshape(img.shape[0], img.shape[1], -1)  # (H, W, C)
    x0, x1, a0, a1 = _linear_coeffs(src.shape[1], out_w, clamp_weights=True)
    y0, y1, b0, b1 = _linear_coeffs(src.shape[0], out_h, clamp_weights=False)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # (H, out_w, C), x2048
    # v_mul_hi((S >> 4), beta) per row, summed, then v_rshr_pack_u<2>: (v + 2) >> 2, saturated
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    out = np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)
    return out.reshape((out_h, out_w) + img.shape[2:])


OCR_MIN_SIDE = 64  # OFA:data/mm_data/ocr_dataset.py ocr_resize: max(64, ...)
OCR_DOCUMENT_STRIP = (64, 1920)  # (h, w) of a document line before it is folded into 4 rows
OCR_DOCUMENT_ROWS = 4


def ocr_resize(
    img: Image.Image, size: int, document: bool = False
) -> tuple[np.ndarray, tuple[float, float]]:
    """OFA's OCR resize: a (S, S, 3) uint8 square and the content's (w, h) scale factors.

    ``OFA:data/mm_data/ocr_dataset.py ocr_resize``: the longer side becomes ``size`` and the
    shorter ``max(64, int(size * short / long))`` (Pillow bicubic, as torchvision's ``F.resize`` on
    PIL images), then the square is filled by repeating the edge pixels (``F.pad`` edge mode).
    The official code places the image at a random offset; here it is centred, offset
    ``(size - side) // 2``, as ModelScope's OFA OCR preprocessor does
    (``MS:preprocessors/ofa/ocr_recognition.py``). ``document``: the image is resized to a
    64 x 1920 strip, cut into 4 pieces of 64 x 480 stacked top to bottom (256 x 480), then
    centred vertically; it needs ``size`` 480.
    """
    if size < OCR_MIN_SIDE:
        raise OFAValueError(f"OCR images need a size of at least {OCR_MIN_SIDE}, got {size}")
    w, h = img.size
    if document:
        strip_h, strip_w = OCR_DOCUMENT_STRIP
        row_w = strip_w // OCR_DOCUMENT_ROWS
        if size != row_w:
            raise OFAValueError(
                f"document OCR needs image size {row_w} (its row width), got {size}"
            )
        line = np.asarray(img.resize((strip_w, strip_h), Image.Resampling.BICUBIC))
        # the official ToTensor -> chunk -> cat -> ToPILImage round trip is exact on uint8 values
        content = np.concatenate(np.split(line, OCR_DOCUMENT_ROWS, axis=1), axis=0)  # (256, 480, 3)
        scale = (strip_w / w, strip_h / h)
    else:
        if w >= h:
            new_w, new_h = size, max(OCR_MIN_SIDE, int(size * (h / w)))
        else:
            new_w, new_h = max(OCR_MIN_SIDE, int(size * (w / h))), size
        content = np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC))
        scale = (new_w / w, new_h / h)
    top, left = (size - content.shape[0]) // 2, (size - content.shape[1]) // 2
    bottom, right = size - content.shape[0] - top, size - content.shape[1] - left
    return np.pad(content, ((top, bottom), (left, right), (0, 0)), mode="edge"), scale


def resize(
    img: Image.Image, size: int, interpolation: Interpolation | str = Interpolation.BILINEAR
) -> np.ndarray:
    """``size`` x ``size`` RGB image as the OFA pipelines make it; (S, S, 3) uint8.

    ``"bilinear"``: cv2 INTER_LINEAR (mmcv ``Resize`` in mmpretrain's caption and refcoco configs);
    ``"bicubic"``: Pillow BICUBIC (vqa, and the official OFA's torchvision ``Resize``); ``"ocr"``,
    ``"ocr_document"``: :func:`ocr_resize`.
    """
    return _resize(img, size, interpolation)[0]


def _resize(
    img: Image.Image, size: int, interpolation: Interpolation | str
) -> tuple[np.ndarray, tuple[float, float]]:
    how = Interpolation.parse(interpolation)
    square = (size / img.width, size / img.height)
    if how is Interpolation.BILINEAR:
        return resize_cv2_bilinear(np.asarray(img), size), square
    if how is Interpolation.BICUBIC:
        return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)), square
    return ocr_resize(img, size, document=how is Interpolation.OCR_DOCUMENT)


def load_resized(
    image: ImageSource, size: int, interpolation: Interpolation | str = Interpolation.BILINEAR
) -> tuple[torch.Tensor, ImageInfo]:
    """Load and resize to ``size`` x ``size``: a (3, S, S) uint8 tensor, before :func:`normalize`."""
    rgb = load_image(image)
    pixels, scale = _resize(rgb, size, interpolation)
    info = ImageInfo(ori_shape=(rgb.height, rgb.width), scale_factor=scale)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1), info


def normalize(
    pixels: torch.Tensor,
    mean: float | Sequence[float] = OFA_MEAN,
    std: float | Sequence[float] = OFA_STD,
) -> torch.Tensor:
    """``(x - 255 * mean) / (255 * std)`` of (3, S, S) uint8 pixels as float32.

    mmpretrain ``MultiModalDataPreprocessor``: mean / std in 0..255.
    """
    return (pixels.float() - _times_255(_values(mean))) / _times_255(_values(std))


def _values(v: float | Sequence[float]) -> tuple[float, ...]:
    return (v,) if isinstance(v, int | float) else tuple(v)


@functools.lru_cache(maxsize=8)
def _times_255(values: tuple[float, ...]) -> torch.Tensor:
    """``255 * values`` as a (C, 1, 1) float32 tensor, built once per ``values`` (a hot path)."""
    return torch.tensor(values, dtype=torch.float64).mul(255).float().reshape(-1, 1, 1)


def preprocess(
    image: ImageSource,
    size: int,
    interpolation: Interpolation | str = Interpolation.BILINEAR,
    mean: float | Sequence[float] = OFA_MEAN,
    std: float | Sequence[float] = OFA_STD,
) -> tuple[torch.Tensor, ImageInfo]:
    """Load, resize to ``size`` x ``size`` and normalise one image for the OFA encoder.

    ``mean`` / ``std`` are in [0, 1] units; the result is ``(x - 255 * mean) / (255 * std)``,
    i.e. ``(x - 127.5) / 127.5`` by default, as a (3, S, S) float32 tensor.
    """
    pixels, info = load_resized(image, size, interpolation)
    return normalize(pixels, mean, std), info


def preprocess_batch(
    images: Sequence[ImageSource],
    size: int,
    interpolation: Interpolation | str = Interpolation.BILINEAR,
    mean: float | Sequence[float] = OFA_MEAN,
    std: float | Sequence[float] = OFA_STD,
) -> tuple[torch.Tensor, list[ImageInfo]]:
    """:func:`preprocess` for several images: a (B, 3, S, S) tensor and one :class:`ImageInfo` each."""
    if not images:
        raise ValueError("preprocess_batch needs at least one image")
    done = [preprocess(img, size, interpolation, mean, std) for img in images]
    return torch.stack([t for t, _ in done]), [info for _, info in done]
