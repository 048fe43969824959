"""The ``ofa`` command: argument parsing only; the work is done by the library."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OFAValueError, describe, is_user_error

if TYPE_CHECKING:
    from .tasks import Result

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(
    name: str, configure: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Handler], Handler]:
    """Register a sub-command: ``configure`` adds its arguments, the function runs it."""

    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = (configure, fn)
        return fn

    return wrap


def expand_images(args: Sequence[str]) -> list[str]:
    """Paths, directories (their images, sorted), globs and URLs -> a list of image sources."""
    from .images import IMAGE_SUFFIXES

    out: list[str] = []
    for arg in args:
        p = Path(arg)
        if arg.startswith(("http://", "https://")) or p.is_file():
            out.append(arg)
        elif p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise OFAValueError(
                    f"{arg}: directory holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            out.extend(found)
        elif matches := sorted(glob.glob(arg)):
            out.extend(matches)
        else:
            raise OFAValueError(f"{arg}: no such image file, directory or pattern")
    return out


def _model_args(p: argparse.ArgumentParser) -> None:
    from .zoo import DEFAULT_MODEL

    p.add_argument("images", nargs="+", help="image files, directories, globs or URLs")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name or checkpoint path (default {DEFAULT_MODEL})",
    )
    p.add_argument("--pretrained", help="weights overriding the named model's")
    p.add_argument("--tokenizer", help="tokenizer directory or hub id")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=8)
    _n_best_arg(p)
    _decoding_arg(p)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    _precision_arg(p)
    _compile_arg(p)
    _backend_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _precision_arg(p: argparse.ArgumentParser) -> None:
    # ofa_vl.model.precision.PRECISIONS, written out so that --help does not import torch
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "int8-dynamic", "int8-legacy"],
        default="fp32",
        help="bf16: weights cast (stream, logits fp32); int8: torchao weight-only; "
        "int8-dynamic: torchao int8 activations too; int8-legacy: quantize_dynamic",
    )


def _backend_arg(p: argparse.ArgumentParser) -> None:
    # ofa_vl.api.BACKENDS, written out so that --help does not import torch
    p.add_argument(
        "--backend", choices=["torch", "onnxruntime"], default="torch",
        help="onnxruntime: run a folder written by `ofa export --format onnx`",
    )  # fmt: skip


def _compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="decode with a torch.compile'd step (compiling takes tens of seconds once)",
    )


Rows = list[tuple[str, "Result"]]


def _run_task(
    args: argparse.Namespace, task: str, fields: dict[str, Any], **task_options: Any
) -> tuple[Rows, list[tuple[str, str]]]:
    """The shared path of the inference commands: images, pipeline, decoding overrides.

    Returns the results of the readable images and ``(image, reason)`` for the others.
    """
    from .api import get_model
    from .images import ImageError, load_image
    from .options import check_counts, check_device, check_threads

    check_counts(batch_size=args.batch_size)
    check_threads(args.threads)
    check_device(args.device)
    images = expand_images(args.images)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pipe = get_model(
        args.model,
        pretrained=args.pretrained,
        device=args.device,
        tokenizer=args.tokenizer,
        task=task,
        precision=args.precision,
        compile=args.compile,
        backend=args.backend,
        **task_options,
    )
    overrides = _decoding(args)
    rows: Rows = []
    failed: list[tuple[str, str]] = []
    for start in range(0, len(images), args.batch_size):  # one bad file fails alone
        loaded = []
        for src in images[start : start + args.batch_size]:
            try:
                loaded.append((src, load_image(src)))
            except (ImageError, FileNotFoundError) as err:
                failed.append((src, describe(err)))
        if loaded:
            batch = [im for _, im in loaded]
            results = pipe.run(batch, batch_size=args.batch_size, **fields, **overrides)
            rows += zip([src for src, _ in loaded], results)
    return rows, failed


def _n_best_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--n-best", type=int, metavar="K", help="also the K best beams (K <= beams), best first"
    )


def _decoding_arg(p: argparse.ArgumentParser) -> None:
    """The decoding options :func:`_decoding` reads."""
    p.add_argument("--beams", type=int, help="beam size (default: the model's)")
    p.add_argument("--max-new-tokens", type=int, help="length limit (default: the model's)")
    p.add_argument(
        "--decoding", action="append", default=[], metavar="KEY=VALUE",
        help="a decoding option (ofa_vl.generation.GenerationConfig), e.g. length_penalty=0.7; "
        "the value is read as JSON when it parses",
    )  # fmt: skip


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict, each value read as JSON when it parses."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise OFAValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    return options


def _decoding(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding overrides given (0 and negatives included: the library refuses them); an
    unknown ``--decoding`` key is one line naming the valid ones."""
    from .generation.config import unknown_options

    options = _key_values(args.decoding, "--decoding")
    if error := unknown_options(options):
        raise error
    given = (
        ("num_beams", args.beams),
        ("max_new_tokens", args.max_new_tokens),
        ("num_return_sequences", getattr(args, "n_best", None)),  # the inference commands'
    )
    return {**options, **{k: v for k, v in given if v is not None}}


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
        from .images import load_image
        from .visualize import draw_boxes

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


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'ofa-base*'")
    p.add_argument("--task", help="caption, refcoco, vqa, ...")
    p.add_argument("--json", action="store_true")


@command("models", _models_args)
def cmd_models(args: argparse.Namespace) -> int:
    """List the named models."""
    from .zoo import MODELS, list_models

    names = list_models(args.pattern, args.task)
    if not names:
        wanted = " and ".join(
            f"{what} {value!r}"
            for what, value in (("pattern", args.pattern), ("task", args.task))
            if value
        )
        print(f"ofa: no model matches {wanted}; `ofa models` lists them all", file=sys.stderr)
    if args.json:
        rows = [
            {
                "name": n,
                "task": MODELS[n].task,
                "language": MODELS[n].language,
                "weights": MODELS[n].weights,
            }
            for n in names
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for n in names:
            card = MODELS[n]
            print(f"{n:44s} {card.task:8s} {card.language:3s} {card.weights}")
    return 0 if names else 1


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a model folder (model.safetensors, or a LoRA adapter's files)")
    p.add_argument("repo_id", help="the hub repository, USER/REPO (created when missing)")
    p.add_argument("--task", help="the task the model answers (default: its training run's)")
    p.add_argument("--base-model", help="the model it was fine-tuned from (default: the run's)")
    p.add_argument(
        "--license", default="apache-2.0", help="the card's license (default apache-2.0)"
    )
    p.add_argument("--private", action="store_true", help="create the repository private")


@command("push", _push_args)
def cmd_push(args: argparse.Namespace) -> int:
    """Upload a model folder to the Hugging Face hub with a generated model card."""
    from .publish import push_folder

    url = push_folder(
        args.folder, args.repo_id, task=args.task, base_model=args.base_model,
        license=args.license, private=args.private,
    )  # fmt: skip
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint: mmpretrain .pth, fairseq .pt, HF dir, zoo name")
    p.add_argument("dst", help="output .safetensors (or a model folder with --merge-adapter)")
    p.add_argument(
        "--no-ema", action="store_true", help="fairseq: use the raw weights, not the EMA"
    )
    p.add_argument(
        "--merge-adapter",
        metavar="ADAPTER_DIR",
        help="fold this LoRA adapter (adapter.safetensors + adapter.json) into SRC's weights",
    )


@command("convert", _convert_args)
def cmd_convert(args: argparse.Namespace) -> int:
    """Convert any OFA checkpoint to this project's safetensors format."""
    from .checkpoints import convert

    if args.merge_adapter is not None:
        from .model_folder import merge_adapter_files

        merged = merge_adapter_files(
            args.src, Path(args.merge_adapter), Path(args.dst), use_ema=not args.no_ema
        )
        print(f"wrote {merged}")
        return 0
    if not args.dst.endswith(".safetensors"):
        raise OFAValueError(f"{args.dst}: the output must be a .safetensors file")
    out = convert(args.src, args.dst, use_ema=not args.no_ema)
    print(f"wrote {out}")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name or checkpoint path")
    p.add_argument("out", help="the model folder to write (graphs, tokenizer, pipeline.json)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--quantize", choices=["int8"], help="int8: ONNX Runtime dynamic int8 MatMuls")
    p.add_argument("--task", help="the task whose preprocessing pipeline.json records")
    p.add_argument("--pretrained", help="weights overriding the named model's")


@command("export", _export_args)
def cmd_export(args: argparse.Namespace) -> int:
    """Export a model to ONNX (an encoder graph and a decoder-step graph; needs the onnx extra)."""
    from .api import get_model
    from .onnx.export import export

    pipe = get_model(args.model, pretrained=args.pretrained, task=args.task)
    print(f"wrote {export(pipe, args.out, format=args.format, quantize=args.quantize)}")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", required=True)
    s = sub.add_parser("shapes", help="the synthetic shapes world")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=2000)
    s.add_argument("--val", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--workers", type=int, default=1, help="processes rendering the images")
    f = sub.add_parser("shapes-folder", help="shapes scenes as a folder dataset (ofa train --data)")
    f.add_argument("--out", required=True)
    f.add_argument("--task", choices=["caption", "refcoco", "vqa"], default="caption")
    f.add_argument("--train", type=int, default=200)
    f.add_argument("--val", type=int, default=20)
    f.add_argument("--test", type=int, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--size", type=int, default=256)


@command("data", _data_args)
def cmd_data(args: argparse.Namespace) -> int:
    """Generate datasets (the synthetic shapes world)."""
    from .shapes.world import shapes_command, write_shapes_folder

    if args.dataset == "shapes-folder":
        counts = (args.train, args.val, args.test)
        lines = write_shapes_folder(args.out, args.task, counts, args.seed, args.size)
        print(f"wrote {args.task} lines to {args.out}: {lines}")
        return 0
    shapes_command(args.out, args.train, args.val, args.seed, args.size, args.workers)
    return 0


def _test_args(p: argparse.ArgumentParser) -> None:
    from .evaluate import DATASETS

    p.add_argument("model", help="zoo name or checkpoint path")
    p.add_argument("--data", help="your own data: a folder of images + metadata.jsonl/.csv")
    p.add_argument("--task", help="--data: score only this task of a mixture (default: each)")
    p.add_argument("--strict", action="store_true", help="--data: refuse bad lines")
    p.add_argument("--dataset", choices=[d for d in DATASETS if d != "folder"])
    p.add_argument("--data-root", help="the --dataset folder (mmpretrain's data/coco)")
    p.add_argument(
        "--split",
        help="test, val, testA, val2014, test-dev2015 ...; --data: its test, else validation split",
    )
    p.add_argument("--pretrained", help="weights overriding the named model's")
    p.add_argument("--tokenizer", help="tokenizer directory or hub id")
    p.add_argument(
        "--device", help="cpu, cuda (default when present; under torchrun each worker's own GPU)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, help="evaluate the first N samples only")
    p.add_argument("--out", help="run folder (default ofa-test/<model>_<dataset>_<split>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--workers", type=int, default=2, help="image loading processes (0: none)")
    _decoding_arg(p)
    p.add_argument("--image-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--answers", help="VQA answer list (ans2label .pkl/.json) constraining decoding")
    p.add_argument("--object-tags", help="VQA: VinVL object tags (.json/.tsv)")
    p.add_argument(
        "--coco-results", action="store_true",
        help="also write OUT/coco_results.json (captions or boxes with scores, COCO.loadRes)",
    )  # fmt: skip
    _backend_arg(p)


@command("test", _test_args)
def cmd_test(args: argparse.Namespace) -> int:
    """evaluate a model on a benchmark (resumable; torchrun for several processes)"""
    from .evaluate import EvalConfig, evaluate_command

    if args.data is not None:
        dataset, root = "folder", args.data
    elif args.dataset and args.data_root and args.split:
        dataset, root = args.dataset, args.data_root
    else:
        raise OFAValueError("ofa test needs --data DIR, or --dataset, --data-root and --split")
    generation = _decoding(args)
    options = {
        k: v
        for k, v in (("image_size", args.image_size), ("answers", args.answers))
        if v is not None
    }
    config = EvalConfig(
        dataset=dataset, data_root=root, split=args.split, task=args.task,
        strict=args.strict, out=args.out, batch_size=args.batch_size, limit=args.limit,
        resume=args.resume, workers=args.workers, device=args.device, pretrained=args.pretrained,
        tokenizer=args.tokenizer, object_tags=args.object_tags, generation=generation,
        coco_results=args.coco_results, task_options={"backend": args.backend, **options},
    )  # fmt: skip
    evaluate_command(args.model, config)
    return 0


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name or checkpoint path")
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="a folder (recursive), glob, .txt list of paths/URLs, .csv/.jsonl/.parquet table "
        "(file_name or image column + task fields), WebDataset shards (shard-{000..009}.tar)",
    )  # fmt: skip
    p.add_argument("--task", help="caption, refcoco, vqa, ocr, ask, ... (default: the model's)")
    p.add_argument("--out", required=True, help="result file; OUT.errors.jsonl, OUT.parts/ beside")
    # ofa_vl.bulk.FORMATS, written out so that --help does not import torch
    p.add_argument("--format", choices=["jsonl", "parquet", "coco"], help="default: jsonl")
    p.add_argument(
        "--field", action="append", default=[], metavar="KEY=VALUE",
        help="a task field for every record (question=..., text=...); a row's own wins",
    )  # fmt: skip
    p.add_argument("--answers", help="VQA answer list (ans2label .pkl/.json) constraining decoding")
    p.add_argument("--pretrained", help="weights overriding the named model's")
    p.add_argument("--tokenizer", help="tokenizer directory or hub id")
    p.add_argument("--device", help="cpu, cuda (default when present; torchrun: each worker's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=1024, help="records per written chunk")
    p.add_argument("--workers", type=int, default=2, help="image loading processes (0: none)")
    p.add_argument("--resume", action="store_true", help="continue the run writing --out")
    p.add_argument(
        "--engine", choices=["local", "ray"], default="local",
        help="local: this process (or each torchrun rank); ray: a Ray Data job (the ray extra)",
    )  # fmt: skip
    p.add_argument("--actors", type=int, default=2, help="--engine ray: actors (a GPU each)")
    _decoding_arg(p)
    _n_best_arg(p)
    _precision_arg(p)
    _compile_arg(p)
    _backend_arg(p)


@command("predict", _predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    """Run a task over a whole collection into a result file (resumable; torchrun shards it)."""
    from .bulk import predict

    options = {"answers": args.answers} if args.answers else {}
    summary = predict(
        args.model, args.inputs, args.out, task=args.task, fields=_key_values(args.field, "--field"),
        format=args.format, batch_size=args.batch_size, chunk_size=args.chunk_size,
        workers=args.workers, resume=args.resume, engine=args.engine, actors=args.actors,
        device=args.device, pretrained=args.pretrained,
        tokenizer=args.tokenizer, precision=args.precision, compile=args.compile,
        backend=args.backend, generation=_decoding(args), **options,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.line(), file=sys.stderr)
    return summary.exit_status


def _serve_args(p: argparse.ArgumentParser) -> None:
    from .zoo import DEFAULT_MODEL

    p.add_argument(
        "--model",
        action="append",
        help=f"zoo name or checkpoint path, repeatable, the first is the default ({DEFAULT_MODEL})",
    )
    p.add_argument("--tokenizer", help="tokenizer directory or hub id (all models)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="most requests decoded together")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="wait for a batch to fill")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    p.add_argument("--timeout-s", type=float, default=60.0, help="answer 504 after this long")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body")
    p.add_argument(
        "--read-timeout-s", type=float, default=30.0,
        help="drop a client that has not sent its whole request (headers and body) by then (408)",
    )  # fmt: skip
    p.add_argument("--max-connections", type=int, default=256, help="open connections before 503")
    p.add_argument("--replicas", type=int, help="model replicas (one per device; default 1)")
    p.add_argument("--devices", help="a replica per device: cuda:0,cuda:1 ... or auto (every GPU)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: Ray Serve")
    p.add_argument("--allow-url-images", action="store_true", help="fetch http(s) image_url parts")
    _compile_arg(p)
    _backend_arg(p)


@command("serve", _serve_args)
def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API and the web page (needs the serve extra)."""
    from .serve import ServeConfig, serve
    from .zoo import DEFAULT_MODEL

    config = ServeConfig(
        args.max_batch, args.batch_wait_ms, args.max_queue, args.timeout_s, args.max_upload_mb,
        read_timeout_s=args.read_timeout_s, max_connections=args.max_connections,
        allow_url_images=args.allow_url_images,
    )  # fmt: skip
    if args.engine == "ray" or args.replicas or args.devices:  # issue 28: serve/replicas.py
        from .serve.ray_engine import serve_ray
        from .serve.replicas import replica_devices, replicated_app, serve_replicas

        load = {"tokenizer": args.tokenizer, "compile": args.compile, "backend": args.backend}
        models = args.model or [DEFAULT_MODEL]
        if args.engine == "ray":
            serve_ray(models, host=args.host, port=args.port, replicas=args.replicas,
                      config=config, **load)  # fmt: skip
        else:
            devices = replica_devices(args.devices, args.replicas)
            serve_replicas(replicated_app(models, devices, config, **load), args.host, args.port)
        return 0
    serve(
        args.model or [DEFAULT_MODEL],
        tokenizer=args.tokenizer,
        device=args.device,
        compile=args.compile,
        backend=args.backend,
        host=args.host,
        port=args.port,
        config=config,
    )
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    from .train import add_train_args

    add_train_args(p)


@command("train", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune or train OFA (caption, grounding, VQA, multitask); torchrun for several GPUs."""
    from .train import train_command

    return train_command(args)


def _demo_args(p: argparse.ArgumentParser) -> None:
    from .zoo import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL} (bundled)")
    p.add_argument("--scenes", type=int, default=3, help="how many synthetic scenes")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--out", default="ofa-demo.png", help="picture of the scenes with their boxes")


@command("demo", _demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    """Caption, ground and answer on a few generated scenes (offline, bundled model)."""
    import numpy as np
    from PIL import Image

    from .api import get_model
    from .shapes.text import referring_expressions
    from .shapes.world import generate_scene, render_scene
    from .visualize import draw_boxes

    rng = np.random.default_rng(args.seed)
    scenes = [generate_scene(rng) for _ in range(args.scenes)]
    images = [render_scene(s) for s in scenes]
    texts = [(referring_expressions(s, 0) or ["the shape"])[0] for s in scenes]
    caption = get_model(args.model, task="caption")
    ground = get_model(args.model, task="refcoco")
    vqa = get_model(args.model, task="vqa")
    captions = caption(images)
    boxes = ground(images, text=texts)
    answers = vqa(images, question="how many shapes are there?")
    assert isinstance(captions, list) and isinstance(boxes, list) and isinstance(answers, list)
    tiles = []
    for i, img in enumerate(images):
        print(f"scene {i}: caption: {captions[i]['pred_caption']}")
        print(
            f"scene {i}: {texts[i]!r} -> box {[round(c) for c in (boxes[i]['pred_bboxes'] or [[]])[0]]}"
        )
        print(f"scene {i}: how many shapes are there? -> {answers[i]['pred_answer']}")
        tiles.append(draw_boxes(img, boxes[i]["pred_bboxes"], [texts[i]]))
    sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    sheet.save(args.out)
    print(f"saved {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofa", description="OFA vision-language models")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip() or None)
        configure(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: a user error (:mod:`ofa_vl.errors`) is one line and exit 2; a bug keeps
    its traceback."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `ofa models | head`: the reader has what it wanted, as `git log`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # exit's flush is quiet
        return 0
    except KeyboardInterrupt:
        print("ofa: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_user_error(err) or args.debug or os.environ.get("OFA_VL_DEBUG"):
            raise
        print(f"ofa: error: {describe(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
