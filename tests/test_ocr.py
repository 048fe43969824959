"""OFA's OCR preprocessing (``OFA:data/mm_data/ocr_dataset.py ocr_resize``), checked against sizes
and paddings computed by hand, and the OCR task's prompts and output."""

import numpy as np
import pytest
import torch
from PIL import Image

from ofa_vl.images import load_resized, ocr_resize, preprocess
from ofa_vl.tasks import TaskFields, get_task


def gradient(w: int, h: int) -> Image.Image:
    """Every row and column distinct, so an edge padding shows which row or column it repeats."""
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                                     (x + y) % 256], -1).astype(np.uint8))  # fmt: skip


@pytest.mark.parametrize(
    ("w", "h", "content", "pad"),
    [
        # wide: width -> 480, height int(480 * h / w), centred: top = (480 - h') // 2
        (300, 100, (160, 480), (160, 160, 0, 0)),
        (480, 161, (161, 480), (159, 160, 0, 0)),  # odd remainder: one more row below
        (1000, 50, (64, 480), (208, 208, 0, 0)),  # int(24.0) -> at least 64 rows
        (100, 100, (480, 480), (0, 0, 0, 0)),  # square: w >= h, no padding
        # tall: height -> 480, width int(480 * w / h), centred: left = (480 - w') // 2
        (90, 300, (480, 144), (0, 0, 168, 168)),
        (7, 700, (480, 64), (0, 0, 208, 208)),
    ],
)
def test_ocr_resize_sizes_and_edge_padding(w, h, content, pad):
    img = gradient(w, h)
    out, scale = ocr_resize(img, 480)
    top, bottom, left, right = pad
    ch, cw = content
    assert out.shape == (480, 480, 3) and out.dtype == np.uint8
    body = out[top : top + ch, left : left + cw]
    want = np.asarray(img.resize((cw, ch), Image.Resampling.BICUBIC))  # F.resize on PIL images
    np.testing.assert_array_equal(body, want)
    # torchvision F.pad(padding_mode="edge"): the first / last row or column repeated
    rows, cols = slice(top, top + ch), slice(left, left + cw)
    np.testing.assert_array_equal(out[:top, cols], np.broadcast_to(body[:1], (top, cw, 3)))
    np.testing.assert_array_equal(
        out[top + ch :, cols], np.broadcast_to(body[-1:], (bottom, cw, 3))
    )
    np.testing.assert_array_equal(out[rows, :left], np.broadcast_to(body[:, :1], (ch, left, 3)))
    np.testing.assert_array_equal(
        out[rows, left + cw :], np.broadcast_to(body[:, -1:], (ch, right, 3))
    )
    assert scale == (cw / w, ch / h)


def test_ocr_document_folds_a_line_into_four_rows():
    img = gradient(200, 40)
    out, scale = ocr_resize(img, 480, document=True)
    line = np.asarray(img.resize((1920, 64), Image.Resampling.BICUBIC))  # 64 x 1920 strip
    assert out.shape == (480, 480, 3) and scale == (1920 / 200, 64 / 40)
    for k in range(4):  # piece k of 480 columns is rows 112 + 64k .. 112 + 64(k+1)
        np.testing.assert_array_equal(
            out[112 + 64 * k : 176 + 64 * k], line[:, 480 * k : 480 * (k + 1)]
        )
    np.testing.assert_array_equal(out[:112], np.broadcast_to(line[:1, :480], (112, 480, 3)))
    np.testing.assert_array_equal(out[368:], np.broadcast_to(line[-1:, 1440:], (112, 480, 3)))
    # the official ToTensor -> chunk -> cat -> ToPILImage round trip leaves uint8 values as they are
    values = torch.arange(256).to(torch.uint8)
    assert torch.equal(values.float().div(255).mul(255).byte(), values)


def test_ocr_sizes_the_official_code_cannot_pad_are_errors():
    with pytest.raises(ValueError, match="document OCR needs image size 480"):
        ocr_resize(gradient(10, 10), 384, document=True)
    with pytest.raises(ValueError, match="at least 64"):
        ocr_resize(gradient(10, 10), 32)


def test_ocr_task_preprocessing_and_prompts():
    img = gradient(300, 100)
    task = get_task("ocr")
    pixels, info = load_resized(img, task.image_size, task.interpolation)
    np.testing.assert_array_equal(pixels.permute(1, 2, 0).numpy(), ocr_resize(img, 480)[0])
    assert info.ori_shape == (100, 300) and info.scale_factor == (1.6, 1.6)
    x, _ = preprocess(img, 480, "ocr_document")
    folded = torch.from_numpy(ocr_resize(img, 480, document=True)[0]).permute(2, 0, 1)
    torch.testing.assert_close(x, (folded.float() - 127.5) / 127.5)  # mean = std = 0.5
    assert get_task("ocr", document=True).interpolation == "ocr_document"
    assert get_task("ocr", language="zh").prompt(TaskFields()) == "图片上的文字是什么?"
    assert (
        get_task("ocr", language="en").prompt(TaskFields()) == " what are the texts on the image?"
    )
