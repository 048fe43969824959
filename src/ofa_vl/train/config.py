"""``ofa train``'s options: a :class:`TrainConfig` that argparse fills, and their bounds."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PRESETS
from ..data.training import MIXTURES, TASKS
from ..errors import OFAValueError
from ..lora import LoraOptions
from ..options import (
    at_least,
    check_counts,
    check_device,
    check_ema,
    check_image_size,
    check_threads,
)


@dataclass
class TrainConfig:
    """Everything one training run is given (``ofa train --help`` describes each option)."""

    data: Path
    out: Path
    task: str | None = None
    init: str = "shapes"
    tokenizer: str | None = None
    num_bins: int = 1000
    repeat: list[str] = field(default_factory=list)
    image_size: int | None = None
    interpolation: str | None = None
    steps: int = 1000
    batch_size: int = 16
    accum: int = 1
    lr: float = 1e-4
    warmup_ratio: float = 0.06  # OFA run_scripts
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    dropout: float = 0.1
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    freeze_embeddings: bool = False
    freeze_resnet: bool = False
    backbone_steps: int = 0
    ema: float = 0.0
    precision: str = "fp32"
    device: str = "auto"
    workers: int = 2
    cache_images: bool = False
    threads: int | None = None
    seed: int = 0
    max_source_length: int = 80
    save_every: int = 500
    log_every: int = 10
    resume: bool = False
    no_progress: bool = False
    strict: bool = False
    val_every: int = 0
    early_stop: int = 0
    val_beams: int | None = None
    val_max_new_tokens: int | None = None
    lora_rank: int = 0  # 0: no LoRA, every weight trains
    lora_alpha: float = LoraOptions.alpha
    lora_dropout: float = LoraOptions.dropout
    lora_targets: list[str] = field(default_factory=lambda: list(LoraOptions.targets))
    activation_checkpointing: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace | TrainConfig) -> TrainConfig:
        """The config of parsed ``ofa train`` arguments (other attributes are ignored)."""
        if isinstance(args, TrainConfig):
            return args
        given = vars(args)
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: given[k] for k in names if k in given})

    def check(self) -> None:
        """Every option within its bounds (:mod:`ofa_vl.options`)."""
        check_counts(
            steps=self.steps, batch_size=self.batch_size, accum=self.accum,
            save_every=self.save_every, log_every=self.log_every, num_bins=self.num_bins,
            max_source_length=self.max_source_length,
        )  # fmt: skip
        for name in ("backbone_steps", "workers", "val_every", "early_stop"):
            at_least(name.replace("_", "-"), getattr(self, name), 0)
        check_counts(val_beams=self.val_beams, val_max_new_tokens=self.val_max_new_tokens)
        at_least("lora-rank", self.lora_rank, 0)
        if self.lora_rank and self.init in PRESETS:
            raise OFAValueError(
                "LoRA adapts trained weights: --init a model name or folder, not a preset"
            )
        if self.early_stop and not self.val_every:
            raise OFAValueError("--early-stop needs --val-every (validations to compare)")
        check_ema(self.ema)
        check_threads(self.threads)
        check_image_size(self.image_size)
        if self.device != "auto":
            check_device(self.device)
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise OFAValueError(f"warmup-ratio must be in [0, 1], got {self.warmup_ratio}")

    def run_settings(self) -> dict[str, Any]:
        """The options that decide the weights a run produces; a resumed run must repeat them."""
        skip = {"out", "device", "workers", "cache_images", "threads", "save_every", "log_every",
                "resume", "no_progress"}  # fmt: skip
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        return out | {"data": str(self.data)}


def _defaults() -> dict[str, Any]:
    """:class:`TrainConfig`'s defaults: the one place ``ofa train``'s option defaults are written."""
    return {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The ``ofa train`` options (they fill a :class:`TrainConfig`, whose defaults they take)."""
    p = parser
    p.set_defaults(**_defaults())
    p.add_argument(
        "--task",
        choices=[*TASKS, *MIXTURES, "classify", "ask"],
        help="the task to train; a folder (--data) says it (its columns or task column)",
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a folder of images + metadata.jsonl/.csv (ofa_vl.data.folder), or a dataset root "
        "in mmpretrain's layout",
    )
    p.add_argument("--out", required=True, type=Path, help="output model folder")
    p.add_argument(
        "--init",
        help=f"model name, checkpoint path or a preset ({', '.join(PRESETS)}) to start from",
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer dir/hub id for a preset init (default: a word vocabulary of the data)",
    )
    p.add_argument("--num-bins", type=int, help="location bins of a fresh preset's vocabulary")
    p.add_argument(
        "--repeat",
        action="append",
        metavar="TASK=N",
        help="use TASK's examples N times in a multitask mixture (e.g. refcoco=2)",
    )
    _optimisation_args(p)


def _optimisation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, help="default: the model's own")
    p.add_argument("--interpolation", choices=["bilinear", "bicubic"])
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="examples per rank and micro-step")
    p.add_argument("--accum", type=int, help="gradient accumulation steps")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-ratio", type=float)  # OFA run_scripts
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--clip-norm", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--attention-dropout", type=float)
    p.add_argument("--drop-path", type=float, help="encoder and decoder drop-path")
    p.add_argument("--freeze-embeddings", action="store_true")
    p.add_argument("--freeze-resnet", action="store_true")
    p.add_argument(
        "--backbone-steps",
        type=int,
        help="first pretrain the ResNet this many steps on the shapes world's per-patch labels",
    )
    p.add_argument("--ema", type=float, help="EMA decay (e.g. 0.9999); 0 = off")
    _run_args(p)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int)
    p.add_argument(
        "--cache-images",
        action="store_true",
        help="resize each image once and keep it in memory (small image sets, e.g. shapes)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-source-length", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--resume", action="store_true", help="continue from OUT's latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--strict", action="store_true", help="--data folder: refuse bad lines")
    p.add_argument(
        "--val-every",
        type=int,
        help="score the folder's validation split every N steps (and at the end) with the task's "
        "metric, as ofa test does; the best weights go to OUT/best/",
    )
    p.add_argument("--early-stop", type=int, help="stop after K validations without improvement")
    p.add_argument("--val-beams", type=int, help="validation beam size")
    p.add_argument("--val-max-new-tokens", type=int, help="validation length limit")
    _lora_args(p)


def _lora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lora-rank",
        type=int,
        help="train LoRA adapters of this rank instead of every weight (pip install "
        "'ofa-vl[lora]'); OUT is then an adapter folder: ofa convert INIT MERGED --merge-adapter OUT",
    )
    p.add_argument("--lora-alpha", type=float, help="LoRA scale alpha / rank")
    p.add_argument("--lora-dropout", type=float)
    p.add_argument(
        "--lora-targets",
        nargs="+",
        help="groups (attention, ffn) or regular expressions over module names",
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each layer in the backward pass instead of keeping its activations",
    )
