"""The run commands: ``ofa test`` (a benchmark), ``ofa predict`` (a collection), ``ofa train``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from ..arguments import add_dataclass_args, from_args
from ..errors import OFAValueError
from .common import Runtime, command, decoding, decoding_args, key_values, runtime, runtime_args


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
    from ..bulk.config import PredictConfig

    p.add_argument("model", help="zoo name or checkpoint path")
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="a folder (recursive), glob, .txt list of paths/URLs, .csv/.jsonl/.parquet table "
        "(file_name or image column + task fields), WebDataset shards (shard-{000..009}.tar)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="result file; OUT.errors.jsonl, OUT.parts/ beside")
    p.add_argument(
        "--field", action="append", default=[], dest="fields", metavar="KEY=VALUE",
        help=PredictConfig.__dataclass_fields__["fields"].metadata["help"],
    )  # fmt: skip
    shared = [f.name for f in dataclasses.fields(Runtime)]  # runtime_args' flags, below
    add_dataclass_args(p, PredictConfig, exclude=("fields", "generation", *shared))
    decoding_args(p, n_best=True)
    runtime_args(p)


@command("predict", _predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    """Run a task over a whole collection into a result file (resumable; torchrun shards it)."""
    from ..bulk import PredictConfig, predict

    fields = key_values(args.fields, "--field")
    config = dataclasses.replace(
        from_args(PredictConfig, args), fields=fields, generation=decoding(args)
    )
    summary = predict(args.model, args.inputs, args.out, config)
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
