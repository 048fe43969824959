"""``ofa train``'s options: a :class:`TrainConfig` that argparse fills, and their bounds."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..arguments import add_dataclass_args, flag, from_args
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
    """Everything one training run is given: the ``ofa train`` flags (``--batch-size`` is
    ``batch_size``, :func:`add_train_args`)."""

    data: Path = flag(help="a folder of images + metadata.jsonl/.csv (ofa_vl.data.folder), or a "
                      "dataset root in mmpretrain's layout")  # fmt: skip
    out: Path = flag(help="output model folder")
    task: str | None = flag(None, "the task to train; a folder (--data) says it (its columns or "
                            "task column)", choices=[*TASKS, *MIXTURES, "classify", "ask"])  # fmt: skip
    init: str = flag("shapes", f"model name, checkpoint path or a preset ({', '.join(PRESETS)}) "
                     "to start from")  # fmt: skip
    tokenizer: str | None = flag(None, "tokenizer dir/hub id for a preset init (default: a word "
                                 "vocabulary of the data)")  # fmt: skip
    num_bins: int = flag(1000, "location bins of a fresh preset's vocabulary")
    repeat: list[str] = flag([], "use TASK's examples N times in a multitask mixture (e.g. "
                             "refcoco=2)", action="append", metavar="TASK=N")  # fmt: skip
    image_size: int | None = flag(None, "input resolution (default: the model's own)")
    interpolation: Literal["bilinear", "bicubic"] | None = flag(None, "image resize kernel")
    steps: int = flag(1000, "optimizer steps")
    batch_size: int = flag(16, "examples per rank and micro-step")
    accum: int = flag(1, "gradient accumulation steps")
    lr: float = flag(1e-4, "peak learning rate")
    warmup_ratio: float = flag(0.06, "share of the steps warming up")  # OFA run_scripts
    weight_decay: float = flag(0.01, "AdamW weight decay")
    clip_norm: float = flag(1.0, "gradient norm clip")
    label_smoothing: float = flag(0.1, "label smoothing of the loss")
    dropout: float = flag(0.1, "dropout")
    attention_dropout: float = flag(0.0, "attention dropout")
    drop_path: float = flag(0.0, "encoder and decoder drop-path")
    freeze_embeddings: bool = flag(False, "keep the embeddings fixed")
    freeze_resnet: bool = flag(False, "keep the ResNet fixed")
    backbone_steps: int = flag(0, "first pretrain the ResNet this many steps on the shapes "
                               "world's per-patch labels")  # fmt: skip
    ema: float = flag(0.0, "EMA decay (e.g. 0.9999); 0 = off")
    precision: Literal["fp32", "bf16"] = flag("fp32", "training precision")
    device: str = flag("auto", "auto, cpu, cuda, cuda:1, ...")
    workers: int = flag(2, "image loading processes")
    cache_images: bool = flag(False, "resize each image once and keep it in memory (small image "
                              "sets, e.g. shapes)")  # fmt: skip
    threads: int | None = flag(None, "torch CPU threads per process")
    seed: int = flag(0, "random seed")
    max_source_length: int = flag(80, "longest prompt, in tokens")
    save_every: int = flag(500, "checkpoint every N steps")
    log_every: int = flag(10, "log every N steps")
    resume: bool = flag(False, "continue from OUT's latest checkpoint")
    no_progress: bool = flag(False, "no tqdm bar")
    strict: bool = flag(False, "--data folder: refuse bad lines")
    val_every: int = flag(0, "score the folder's validation split every N steps (and at the end) "
                          "with the task's metric, as ofa test does; the best weights go to "
                          "OUT/best/")  # fmt: skip
    early_stop: int = flag(0, "stop after K validations without improvement")
    val_beams: int | None = flag(None, "validation beam size")
    val_max_new_tokens: int | None = flag(None, "validation length limit")
    lora_rank: int = flag(0, "train LoRA adapters of this rank instead of every weight (pip "
                          "install 'ofa-vl[lora]'); OUT is then an adapter folder: ofa convert "
                          "INIT MERGED --merge-adapter OUT")  # fmt: skip
    lora_alpha: float = flag(LoraOptions.alpha, "LoRA scale alpha / rank")
    lora_dropout: float = flag(LoraOptions.dropout, "LoRA dropout")
    lora_targets: list[str] = flag(list(LoraOptions.targets), "groups (attention, ffn) or "
                                   "regular expressions over module names")  # fmt: skip
    activation_checkpointing: bool = flag(False, "recompute each layer in the backward pass "
                                          "instead of keeping its activations")  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace | TrainConfig) -> TrainConfig:
        """The config of parsed ``ofa train`` arguments (other attributes are ignored)."""
        return args if isinstance(args, TrainConfig) else from_args(cls, args)

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


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The ``ofa train`` flags: :class:`TrainConfig`'s fields, its defaults theirs."""
    add_dataclass_args(parser, TrainConfig)
