"""Image loading (every input kind, corrupt inputs, URLs) and mmpretrain's OFA preprocessing."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import GOLDENS, IMAGES
from PIL import Image

from ofa_vl.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    load_image,
    preprocess,
    preprocess_batch,
    resize,
    resize_cv2_bilinear,
)

CAT_DOG = IMAGES / "cat-dog.png"
TASKS = {"caption": (480, "bilinear"), "refcoco": (512, "bilinear"), "vqa": (480, "bicubic")}
PIPELINES = GOLDENS / "preprocess"  # cases.json + the resized images as PNG


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((PIPELINES / "cases.json").read_text())


def _rgb(src: object) -> np.ndarray:
    return np.asarray(load_image(src))  # type: ignore[arg-type]


def _encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


# --- preprocessing against mmpretrain --------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("name", sorted(p.name for p in IMAGES.iterdir()))
def test_matches_mmpretrain_pipeline(golden: dict, name: str, task: str) -> None:
    ref = golden[f"{name}/{task}"]
    ref_rgb = np.array(Image.open(PIPELINES / ref["resized_rgb"]))  # (H, W, 3) uint8
    size, interpolation = TASKS[task]
    resized = resize(load_image(IMAGES / name), size, interpolation).astype(np.int16)
    diff = np.abs(resized - ref_rgb.astype(np.int16))
    if name.endswith(".png"):  # lossless decode: the arithmetic must match exactly
        assert diff.max() == 0
    assert diff.max() <= 1 and diff.mean() < 0.5  # JPEG decoders may differ by a grey level

    tensor, info = preprocess(IMAGES / name, size, interpolation)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, size, size)
    assert list(info.ori_shape) == ref["ori_shape"]
    assert list(info.scale_factor) == ref["scale_factor"]
    want = (torch.from_numpy(ref_rgb).permute(2, 0, 1).float() - 127.5) / 127.5  # the model input
    torch.testing.assert_close(tensor, want, rtol=0, atol=1 / 127.5 + 1e-6)


def test_preprocess_batch_and_imagenet_normalisation() -> None:
    paths = sorted(IMAGES.iterdir())
    batch, infos = preprocess_batch(paths, 64, "bicubic")
    assert batch.shape == (len(paths), 3, 64, 64)
    for row, path, info in zip(batch, paths, infos, strict=True):
        single, single_info = preprocess(path, 64, "bicubic")
        assert torch.equal(row, single) and info == single_info
    assert batch.min() >= -1 and batch.max() <= 1

    white = Image.new("RGB", (8, 8), (255, 0, 128))
    x, _ = preprocess(white, 4, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    want = [(255 / 255 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(x[:, 0, 0], torch.tensor(want), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="interpolation"):
        preprocess(white, 4, "nearest")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "shape, size", [((37, 53, 3), (16, 91)), ((200, 150, 3), 31), ((5, 7), (64, 3)), ((9, 9, 1), 9)]
)
def test_cv2_bilinear_is_half_pixel_bilinear(shape: tuple[int, ...], size) -> None:
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = resize_cv2_bilinear(img, size)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    assert out.dtype == np.uint8 and out.shape == (out_h, out_w, *shape[2:])
    # Same sampling as torch's bilinear (align_corners=False, no antialias), to within rounding.
    planes = torch.from_numpy(img.reshape(shape[0], shape[1], -1)).permute(2, 0, 1)[None].float()
    ref = F.interpolate(planes, size=(out_h, out_w), mode="bilinear", align_corners=False)
    ref = ref[0].permute(1, 2, 0).reshape(out.shape).numpy()
    assert np.abs(out.astype(np.float32) - ref).max() <= 1.0
    if isinstance(size, int) and shape[:2] == (size, size):
        assert np.array_equal(out, img)  # same size: a copy, as cv2


# --- input kinds -----------------------------------------------------------------------------


def test_paths_bytes_and_pil_agree() -> None:
    want = np.asarray(Image.open(CAT_DOG).convert("RGB"))
    assert np.array_equal(_rgb(CAT_DOG), want)
    assert np.array_equal(_rgb(str(CAT_DOG)), want)
    assert np.array_equal(_rgb(CAT_DOG.read_bytes()), want)
    assert np.array_equal(_rgb(bytearray(CAT_DOG.read_bytes())), want)
    pil = Image.open(CAT_DOG)
    loaded = load_image(pil)
    assert loaded.mode == "RGB" and loaded is not pil and pil.mode == "RGBA"
    assert np.array_equal(np.asarray(loaded), want)


def test_rgba_alpha_is_dropped_not_composited() -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)  # fully transparent: compositing would change the colour
    assert np.array_equal(_rgb(_encoded(Image.fromarray(rgba, "RGBA"), "PNG")), rgba[..., :3])
    assert np.array_equal(_rgb(rgba), rgba[..., :3])
    la = Image.fromarray(np.dstack([np.full((3, 3), 77, np.uint8), np.zeros((3, 3), np.uint8)]))
    assert la.mode == "LA" and (_rgb(_encoded(la, "PNG")) == 77).all()


def test_numpy_arrays() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(_rgb(grey), np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(_rgb(grey[..., None]), np.repeat(grey[..., None], 3, axis=2))
    rgb = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    assert np.array_equal(_rgb(rgb), rgb)
    assert np.array_equal(_rgb(rgb.astype(np.float32) / 255), rgb)
    assert np.array_equal(_rgb((rgb.astype(np.uint16) << 8) + 127), rgb)  # high byte
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((2, 2, 3), 1.5))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((2, 2), np.int64))


def test_palette_cmyk_and_16_bit() -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert _rgb(_encoded(pal, "PNG", transparency=1)).tolist() == [[[10, 20, 30], [200, 100, 50]]]

    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert (_rgb(cmyk) == (255, 0, 0)).all()
    assert (np.abs(_rgb(_encoded(cmyk, "JPEG", quality=100)).astype(int) - (255, 0, 0)) <= 2).all()

    deep = np.array([[0, 257, 65535, 32768]], np.uint16)
    png16 = _encoded(Image.fromarray(deep), "PNG")
    assert Image.open(io.BytesIO(png16)).mode == "I;16"
    assert _rgb(png16)[..., 0].tolist() == [[0, 1, 255, 128]]
    assert _rgb(Image.fromarray(deep.astype(np.int32)))[..., 1].tolist() == [[0, 1, 255, 128]]


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    img = load_image(_encoded(stored, "JPEG", exif=exif, quality=95))
    assert img.size == (20, 40)
    top, bottom = np.asarray(img)[5, 10].astype(int), np.asarray(img)[34, 10].astype(int)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


# --- bad inputs --------------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_corrupt_truncated_and_non_images(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    with pytest.raises(ImageError, match=r"notes\.txt is not a readable image"):
        load_image(text)
    truncated = tmp_path / "half.png"
    truncated.write_bytes(CAT_DOG.read_bytes()[: CAT_DOG.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"half\.png is not a readable image.*truncated"):
        load_image(truncated)
    corrupt = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    with pytest.raises(ImageError, match="image data is not a readable image"):
        load_image(corrupt)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="int"):
        load_image(3)  # type: ignore[arg-type]


def test_decompression_bombs_are_refused() -> None:
    with pytest.raises(ImageError, match="too large to decode safely") as err:
        load_image(_png_claiming(100_000, 100_000))
    assert "\n" not in str(err.value)
    with pytest.raises(ImageError, match=r"600x400 = 240000 pixels, over the 1000-pixel cap"):
        load_image(CAT_DOG, max_pixels=1000)
    with pytest.raises(ImageError, match="over the"):  # between PIL's warning and error limits
        load_image(_png_claiming(10_000, 10_000))
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's global is left alone


# --- URLs ------------------------------------------------------------------------------------


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path not in ("/cat-dog.png", "/no-length.png"):
            self.send_error(404)
            return
        body = CAT_DOG.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path == "/cat-dog.png":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)  # the client may stop reading at its size cap

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_url_loading(image_server: str) -> None:
    url = f"{image_server}/cat-dog.png"
    assert np.array_equal(_rgb(url), np.asarray(Image.open(CAT_DOG).convert("RGB")))
    with pytest.raises(
        ImageError, match=rf"could not fetch image {image_server}/nope.png: HTTP 404"
    ):
        load_image(f"{image_server}/nope.png")
    assert np.array_equal(_rgb(f"{image_server}/no-length.png"), _rgb(url))
    for capped in (url, f"{image_server}/no-length.png"):  # declared size, then bytes read
        with pytest.raises(ImageError, match="larger than the 1000-byte limit"):
            load_image(capped, max_bytes=1000)


def test_unreachable_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.png"
    with pytest.raises(ImageError, match=rf"could not fetch image {url}: .*refused"):
        load_image(url, timeout=2)
