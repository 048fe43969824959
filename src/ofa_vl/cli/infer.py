"""The inference commands: ``ofa caption``, ``ground``, ``ocr``, ``vqa`` and ``ask``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..arguments import add_dataclass_args, flag, from_args
from ..errors import describe
from ..zoo import DEFAULT_MODEL
from .common import command, decoding, decoding_args, expand_images, runtime, runtime_args

if TYPE_CHECKING:
    from ..tasks import Result


@dataclass(frozen=True)
class Inference:
    """What the inference commands share (their flags; decoding and runtime ones beside)."""

    model: str = flag(DEFAULT_MODEL, "zoo name or checkpoint path")
    pretrained: str | None = flag(None, "weights overriding the named model's")
    tokenizer: str | None = flag(None, "tokenizer directory or hub id")
    device: str | None = flag(None, "cpu, cuda, cuda:1 ...")
    batch_size: int = flag(8, "images per batch")
    threads: int | None = flag(None, "CPU threads for torch (default: all cores)")
    json: bool = flag(False, "print JSON instead of text")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files, directories, globs or URLs")
    add_dataclass_args(p, Inference)
    decoding_args(p, n_best=True)
    runtime_args(p)


Rows = list[tuple[str, "Result"]]


def _run_task(
    args: argparse.Namespace, task: str, fields: dict[str, Any], **task_options: Any
) -> tuple[Rows, list[tuple[str, str]]]:
    """The shared path of the inference commands: images, pipeline, decoding overrides.

    Returns the results of the readable images and ``(image, reason)`` for the others.
    """
    from ..api import get_model
    from ..images import ImageError, load_image
    from ..options import check_counts, check_device, check_threads

    o = from_args(Inference, args)
    check_counts(batch_size=o.batch_size)
    check_threads(o.threads)
    check_device(o.device)
    images = expand_images(args.images)
    if o.threads:
        import torch

        torch.set_num_threads(o.threads)
    pipe = get_model(
        o.model, pretrained=o.pretrained, device=o.device, tokenizer=o.tokenizer, task=task,
        **runtime(args), **task_options,
    )  # fmt: skip
    overrides = decoding(args)
    rows: Rows = []
    failed: list[tuple[str, str]] = []
    for start in range(0, len(images), o.batch_size):  # one bad file fails alone
        loaded = []
        for src in images[start : start + o.batch_size]:
            try:
                loaded.append((src, load_image(src)))
            except (ImageError, FileNotFoundError) as err:
                failed.append((src, describe(err)))
        if loaded:
            batch = [im for _, im in loaded]
            results = pipe.run(batch, batch_size=o.batch_size, **fields, **overrides)
            rows += zip([src for src, _ in loaded], results)
    return rows, failed


def _failures(failed: list[tuple[str, str]], total: int) -> int:
    """Report the images that could not be read, one line each; the exit status: 0 when all were
    read, 1 when some were (their results are printed), 2 when none was."""
    for src, reason in failed:
        print(f"ofa: error: {reason if src in reason else f'{src}: {reason}'}", file=sys.stderr)
    if failed and total > 1:
        print(f"ofa: {len(failed)} of {total} images failed", file=sys.stderr)
    return 0 if not failed else 2 if len(failed) == total else 1


def _boxes(boxes: Sequence[Sequence[float]] | None) -> str:
    return " ".join(f"[{', '.join(f'{c:.1f}' for c in box)}]" for box in boxes or []) or "(no box)"


def _print(args: argparse.Namespace, rows: Rows, show: Callable[[Any], str]) -> None:
    """One line per image (``show`` reads the typed result), or every result dict as JSON."""
    if args.json:
        print(json.dumps([{"image": img, **res.as_dict()} for img, res in rows], indent=2))
        return
    for img, res in rows:
        print(f"{img}: {show(res)}")
        for k, alt in enumerate(res.n_best, 1):  # --n-best
            print(f"  {k}. {show(alt)} (confidence {alt.confidence:.3f})")


@command("caption", _model_args)
def cmd_caption(args: argparse.Namespace) -> int:
    """Caption images."""
    rows, failed = _run_task(args, "caption", {})
    _print(args, rows, lambda r: r.caption)
    return _failures(failed, len(rows) + len(failed))


def _ground_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--text", required=True, help="the referring expression")
    p.add_argument(
        "--min-confidence", type=float,
        help="no box when the box's confidence is below this (the object is not in the image)",
    )  # fmt: skip
    p.add_argument(
        "--save", help="write the image with the box drawn (one image only, or a folder)"
    )


@command("ground", _ground_args)
def cmd_ground(args: argparse.Namespace) -> int:
    """Find the region a text describes (visual grounding)."""
    options = {} if args.min_confidence is None else {"min_confidence": args.min_confidence}
    rows, failed = _run_task(args, "refcoco", {"text": args.text}, **options)
    _print(args, rows, lambda r: _boxes(r.boxes))
    if args.save:
        from ..images import load_image
        from ..visualize import draw_boxes

        for img, res in rows:
            dest = Path(args.save)
            if len(rows) > 1 or dest.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                dest = dest / (Path(img).stem + "_box.png")
            draw_boxes(load_image(img), getattr(res, "boxes", []), [args.text]).save(dest)
    return _failures(failed, len(rows) + len(failed))


def _ocr_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument(
        "--document", action="store_true", help="document lines (a 64 x 1920 strip in 4 rows)"
    )


@command("ocr", _ocr_args)
def cmd_ocr(args: argparse.Namespace) -> int:
    """Read the text in images (OCR; the OFA-CN OCR models)."""
    opts = {"document": True} if args.document else {}
    rows, failed = _run_task(args, "ocr", {}, **opts)
    _print(args, rows, lambda r: r.text)
    return _failures(failed, len(rows) + len(failed))


def _vqa_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--question", required=True)
    p.add_argument("--answers", help="answer list (ans2label .pkl/.json) to constrain decoding")


@command("vqa", _vqa_args)
def cmd_vqa(args: argparse.Namespace) -> int:
    """Answer a question about images."""
    opts = {"answers": args.answers} if args.answers else {}
    rows, failed = _run_task(args, "vqa", {"question": args.question}, **opts)
    _print(args, rows, lambda r: r.answer)
    return _failures(failed, len(rows) + len(failed))


def _ask_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("instruction", help='any instruction, e.g. "what color is the car?"')
    p.add_argument("--boxes", action="store_true", help="read the answer's <bin> tokens as boxes")


@command("ask", _ask_args)
def cmd_ask(args: argparse.Namespace) -> int:
    """Run a free instruction on images."""
    rows, failed = _run_task(args, "ask", {"prompt": args.instruction, "boxes": args.boxes})
    _print(args, rows, (lambda r: _boxes(r.boxes)) if args.boxes else (lambda r: r.text))
    return _failures(failed, len(rows) + len(failed))
