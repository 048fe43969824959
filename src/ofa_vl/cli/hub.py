"""The model commands: ``ofa models``, ``push``, ``convert`` and ``export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import OFAValueError
from .common import command


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'ofa-base*'")
    p.add_argument("--task", help="caption, refcoco, vqa, ...")
    p.add_argument("--json", action="store_true")


@command("models", _models_args)
def cmd_models(args: argparse.Namespace) -> int:
    """List the named models."""
    from ..zoo import MODELS, list_models

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
    from ..publish import push_folder

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
    from ..checkpoints import convert

    if args.merge_adapter is not None:
        from ..model_folder import merge_adapter_files

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
    from ..api import get_model
    from ..onnx.export import export

    pipe = get_model(args.model, pretrained=args.pretrained, task=args.task)
    print(f"wrote {export(pipe, args.out, format=args.format, quantize=args.quantize)}")
    return 0
