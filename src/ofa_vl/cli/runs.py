"""The run commands: ``ofa test`` (a benchmark), ``ofa predict`` (a collection), ``ofa train``."""

from __future__ import annotations

import argparse
import os
import sys

from ..arguments import add_dataclass_args, from_args
from ..errors import OFAValueError
from .common import command, decoding, decoding_args, key_values, runtime, runtime_args


def _test_args(p: argparse.ArgumentParser) -> None:
    from ..evaluate import EvalConfig

    p.add_argument("model", help="zoo name or checkpoint path")
    p.add_argument("--data", help="your own data: a folder of images + metadata.jsonl/.csv")
    add_dataclass_args(p, EvalConfig, exclude=("generation", "backend"))
    decoding_args(p)
    runtime_args(p, "backend")


@command("test", _test_args)
def cmd_test(args: argparse.Namespace) -> int:
    """evaluate a model on a benchmark (resumable; torchrun for several processes)"""
    from dataclasses import replace

    from ..evaluate import EvalConfig, evaluate_command

    config = from_args(EvalConfig, args)
    if args.data is not None:
        config = replace(config, dataset="folder", data_root=args.data)
    elif not (args.dataset and args.data_root and args.split):
        raise OFAValueError("ofa test needs --data DIR, or --dataset, --data-root and --split")
    config = replace(config, generation=decoding(args), **runtime(args, "backend"))
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
    decoding_args(p, n_best=True)
    runtime_args(p)


@command("predict", _predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    """Run a task over a whole collection into a result file (resumable; torchrun shards it)."""
    from ..bulk import predict

    options = {"answers": args.answers} if args.answers else {}
    summary = predict(
        args.model, args.inputs, args.out, task=args.task, fields=key_values(args.field, "--field"),
        format=args.format, batch_size=args.batch_size, chunk_size=args.chunk_size,
        workers=args.workers, resume=args.resume, engine=args.engine, actors=args.actors,
        device=args.device, pretrained=args.pretrained, tokenizer=args.tokenizer,
        generation=decoding(args), **runtime(args), **options,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary.line(), file=sys.stderr)
    return summary.exit_status


def _train_args(p: argparse.ArgumentParser) -> None:
    from ..train import add_train_args

    add_train_args(p)


@command("train", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune or train OFA (caption, grounding, VQA, multitask); torchrun for several GPUs."""
    from ..train import train_command

    return train_command(args)
