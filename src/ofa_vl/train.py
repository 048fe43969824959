"""``ofa train``: fine-tune or train OFA from scratch on one task or the multitask mixture.

The recipe is OFA's (``OFA:run_scripts/*/train_*.sh``, ``OFA:criterions/label_smoothed_cross_entropy.py``,
OFA-NOTES 2.6): label-smoothed cross-entropy on target tokens, AdamW, linear warm-up then linear
decay, gradient clipping, optional EMA. The loop is nanoGPT-style: DDP through the torchrun
environment variables, bf16 autocast, rank 0 logs and saves.

Determinism: the example order of epoch ``e`` is ``randperm(n, seed=(seed, e))``; optimizer step
``s`` takes the slice ``[s * G, (s + 1) * G)`` of it (``G`` = batch x world x accumulation), split
into micro-batches per accumulation step and rank. A checkpoint stores weights, optimizer,
scheduler, EMA, RNG states and the step, so ``--resume`` continues bit-for-bit on the CPU (on a
GPU to float tolerance: some CUDA backward kernels are not deterministic). The loss of a step
is summed over its target tokens on every rank and divided by their global count, so any split of
the same global batch into ranks and accumulation steps computes the same gradient.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import functools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from .api import PIPELINE_FILE, get_model
from .backbone_pretrain import pretrain_backbone
from .checkpoints import load_model, save_pretrained
from .config import PRESETS, OFAConfig
from .data.training import (
    IGNORE_INDEX,
    MIXTURES,
    TASKS,
    Example,
    TrainingDataset,
    build_word_tokenizer,
    collate,
    example_texts,
    load_examples,
)
from .errors import OFAValueError
from .images import Interpolation
from .model import OFA
from .options import (
    at_least,
    check_counts,
    check_device,
    check_ema,
    check_image_size,
    check_threads,
)
from .runs import RunLock, weights_fingerprint, write_atomic
from .tokenizer import OFATokenizer

CHECKPOINTS = "checkpoints"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.csv"
PLOT_FILE = "loss.png"
KEEP_CHECKPOINTS = 2
METRIC_FIELDS = ("step", "epoch", "loss", "lr", "tokens_per_s", "elapsed_s")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The ``ofa train`` options."""
    p = parser
    p.add_argument("--task", required=True, choices=[*TASKS, *MIXTURES])
    p.add_argument("--data", required=True, type=Path, help="dataset root (mmpretrain layout)")
    p.add_argument("--out", required=True, type=Path, help="output model folder")
    p.add_argument(
        "--init",
        default="shapes",
        help=f"model name, checkpoint path or a preset ({', '.join(PRESETS)}) to start from",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer dir/hub id for a preset init (default: a word vocabulary of the data)",
    )
    p.add_argument(
        "--num-bins", type=int, default=1000, help="location bins of a fresh preset's vocabulary"
    )
    p.add_argument(
        "--repeat",
        action="append",
        default=[],
        metavar="TASK=N",
        help="use TASK's examples N times in a multitask mixture (e.g. refcoco=2)",
    )
    p.add_argument("--image-size", type=int, default=None, help="default: the model's own")
    p.add_argument("--interpolation", choices=["bilinear", "bicubic"], default=None)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="examples per rank and micro-step")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.06)  # OFA run_scripts
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--attention-dropout", type=float, default=0.0)
    p.add_argument("--drop-path", type=float, default=0.0, help="encoder and decoder drop-path")
    p.add_argument("--freeze-embeddings", action="store_true")
    p.add_argument("--freeze-resnet", action="store_true")
    p.add_argument(
        "--backbone-steps",
        type=int,
        default=0,
        help="first pretrain the ResNet this many steps on the shapes world's per-patch labels",
    )
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay (e.g. 0.9999); 0 = off")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--cache-images",
        action="store_true",
        help="resize each image once and keep it in memory (small image sets, e.g. shapes)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-source-length", type=int, default=80)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from OUT's latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


# --------------------------------------------------------------------------- loss
def label_smoothed_loss(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, int]:
    """Summed label-smoothed NLL over positions whose label is not :data:`IGNORE_INDEX`.

    Returns ``(loss_sum, n_tokens)``. ``OFA:criterions/label_smoothed_cross_entropy.py``
    (fairseq): ``eps_i = eps / (V - 1)``, ``loss = (1 - eps - eps_i) * nll + eps_i * sum(-logp)``.
    """
    keep = labels.ne(IGNORE_INDEX)
    lprobs = F.log_softmax(logits[keep].float(), dim=-1)  # (N, V)
    target = labels[keep].unsqueeze(-1)
    nll = -lprobs.gather(-1, target).squeeze(-1)
    smooth = -lprobs.sum(-1)
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss.sum(), int(keep.sum())


def lr_lambda(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 then linear decay to 0 (fairseq ``polynomial_decay``, power 1)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# --------------------------------------------------------------------------- data order
class StepSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of every optimizer step from ``start_step`` on."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        accum: int,
        rank: int,
        world: int,
        seed: int,
        start_step: int,
        total_steps: int,
    ) -> None:
        self.n, self.batch_size, self.accum = n, batch_size, accum
        self.rank, self.world, self.seed = rank, world, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.global_batch = batch_size * world * accum
        self.steps_per_epoch = n // self.global_batch
        if self.steps_per_epoch == 0:
            raise OFAValueError(
                f"{n} examples are fewer than one global batch ({batch_size} x {world} ranks x "
                f"{accum} accumulation steps)"
            )

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The example order of one epoch: a function of (seed, epoch) only."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        order, order_epoch = torch.empty(0, dtype=torch.long), -1
        for step in range(self.start_step, self.total_steps):
            epoch, pos = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            base = pos * self.global_batch
            for a in range(self.accum):
                start = base + (a * self.world + self.rank) * self.batch_size
                yield order[start : start + self.batch_size].tolist()


# --------------------------------------------------------------------------- state
def _rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and python RNG states as plain tensors / containers (weights_only)."""
    name, keys, pos, has_gauss, cached = cast(tuple[Any, ...], np.random.get_state())
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [py_version, list(py_state), py_gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete ``OUT/checkpoints/step_*`` folder."""
    folder = out / CHECKPOINTS
    done = sorted(folder.glob("step_*[0-9]")) if folder.is_dir() else []
    return done[-1] if done else None


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


# --------------------------------------------------------------------------- logging
def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= last_step]
    _write_metrics(path, rows, mode="w")


def _write_metrics(path: Path, rows: Sequence[dict[str, Any]], mode: str = "a") -> None:
    new = mode == "w" or not path.is_file()
    with path.open(mode, newline="") as f:
        writer = csv.DictWriter(f, METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_loss(steps: Sequence[float], losses: Sequence[float], path: Path) -> None:
    """A loss-vs-step line chart drawn with Pillow."""
    w, h, m = 640, 400, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((m, m // 2, w - m // 2, h - m), outline="black")
    if steps:
        lo, hi = min(losses), max(losses)
        s0, s1 = min(steps), max(steps)

        def xy(s: float, v: float) -> tuple[float, float]:
            x = m + (s - s0) / max(s1 - s0, 1e-9) * (w - 1.5 * m)
            y = h - m - (v - lo) / max(hi - lo, 1e-9) * (h - 1.5 * m)
            return x, y

        draw.line([xy(s, v) for s, v in zip(steps, losses, strict=True)], fill="navy", width=2)
        draw.text((4, m // 2), f"{hi:.3f}", fill="black")
        draw.text((4, h - m - 10), f"{lo:.3f}", fill="black")
        draw.text((m, h - m + 6), f"{s0:.0f}", fill="black")
        draw.text((w - m - 20, h - m + 6), f"{s1:.0f}", fill="black")
    draw.text((w // 2 - 40, h - 20), "step", fill="black")
    draw.text((m + 6, m // 2 + 4), "training loss", fill="black")
    img.save(path)


# --------------------------------------------------------------------------- setup
@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_arg: str) -> tuple[_Dist, torch.device]:
    """torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; gloo on CPU, nccl on GPU."""
    d = _Dist(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_arg)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if d.world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def repeat_tasks(examples: list[Example], specs: Sequence[str]) -> list[Example]:
    """Mixture weights as repetition: ``refcoco=2`` puts every grounding example in twice."""
    out = list(examples)
    for spec in specs:
        name, _, times = spec.partition("=")
        if not times.isdigit() or int(times) < 1 or not any(e.task == name for e in examples):
            raise OFAValueError(
                f"--repeat {spec!r}: expected TASK=N with a task of the data, N >= 1"
            )
        out += [e for e in examples if e.task == name] * (int(times) - 1)
    return out


@torch.no_grad()
def init_weights(model: OFA, bin_offset: int | None = None, num_bins: int = 0) -> None:
    """Fresh-model init of ``OFA:models/ofa/unify_transformer.py``'s ``Embedding`` helper.

    Token / position embeddings ~ N(0, dim^-0.5) with the padding row zeroed; the relative
    position bias tables (``zero_init=True`` there) start at zero. Location tokens ``<bin_i>``
    start as sinusoids of ``i`` (same scale), so neighbouring bins start alike: boxes are
    learned from far fewer examples.
    """
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            if "rel_pos_table" in name:
                torch.nn.init.zeros_(module.weight)
                continue
            torch.nn.init.normal_(module.weight, 0.0, module.embedding_dim**-0.5)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
    if bin_offset is not None and num_bins > 0:
        dim = model.cfg.embed_dim
        pos = torch.arange(num_bins, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e3) / dim))
        table = torch.zeros(num_bins, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
        rows = model.embed_tokens.weight[bin_offset : bin_offset + num_bins]
        rows.copy_(table * dim**-0.5 * 2**0.5)  # unit-variance sinusoids, scaled like the rest


def _build(args: argparse.Namespace, examples: list[Example]) -> tuple[OFA, OFATokenizer, int, str]:
    """Model, tokenizer, image size and interpolation from ``--init`` (and ``--tokenizer``)."""
    if args.init in PRESETS:
        if args.tokenizer is not None:
            tok = OFATokenizer.from_pretrained(args.tokenizer)
        else:  # a vocabulary of every task's texts, so one model can learn them all
            corpus = examples if args.task == "multitask" else load_examples(args.data, "multitask")
            tok = build_word_tokenizer(example_texts(corpus), num_bins=args.num_bins)
        torch.manual_seed(args.seed)
        model = OFA(OFAConfig.from_preset(args.init, vocab_size=len(tok)))
        init_weights(model, tok.bin_offset, tok.num_bins)
        size, interp = 480, "bilinear"  # OFA-NOTES 2.3: 480 for caption / VQA
    else:
        pipe = get_model(args.init, task="caption", tokenizer=args.tokenizer)
        model, tok = pipe.model, pipe.tokenizer
        size, interp = pipe.task.image_size, pipe.task.interpolation
    cfg = dataclasses.replace(
        model.cfg,
        dropout=args.dropout,
        attention_dropout=args.attention_dropout,
        activation_dropout=args.dropout,
        encoder_drop_path_rate=args.drop_path,
        decoder_drop_path_rate=args.drop_path,
    )
    rebuilt = OFA(cfg)  # drop-path rates are fixed when the layers are built
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.weights_file = model.weights_file
    check_image_size(args.image_size or size, cfg)
    return rebuilt, tok, args.image_size or size, args.interpolation or interp


def _set_train_mode(model: OFA, freeze_resnet: bool) -> None:
    model.train()
    if freeze_resnet:  # a frozen ResNet keeps its BatchNorm statistics too
        model.encoder.embed_images.eval()


class _EMA:
    """Exponential moving average of every floating-point tensor of the state dict."""

    def __init__(self, model: OFA, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: OFA) -> None:
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[k], 1.0 - self.decay)
            else:
                v.copy_(src[k])


# --------------------------------------------------------------------------- run settings
SETTINGS_FILE = "settings.json"
# The options that decide the weights a run produces; a resumed run must repeat them.
_RUN_OPTIONS = (
    "task", "data", "init", "tokenizer", "num_bins", "repeat", "image_size", "interpolation",
    "steps", "batch_size", "accum", "lr", "warmup_ratio", "weight_decay", "clip_norm",
    "label_smoothing", "dropout", "attention_dropout", "drop_path", "freeze_embeddings",
    "freeze_resnet", "backbone_steps", "ema", "precision", "seed", "max_source_length",
)  # fmt: skip


def check_args(args: argparse.Namespace) -> None:
    """The ``ofa train`` options within their bounds (:mod:`ofa_vl.options`)."""
    check_counts(
        steps=args.steps, batch_size=args.batch_size, accum=args.accum,
        save_every=args.save_every, log_every=args.log_every, num_bins=args.num_bins,
        max_source_length=args.max_source_length,
    )  # fmt: skip
    at_least("backbone-steps", args.backbone_steps, 0)
    at_least("workers", args.workers, 0)
    check_ema(args.ema)
    check_threads(args.threads)
    check_image_size(args.image_size)
    if args.device != "auto":
        check_device(args.device)
    if not 0.0 <= args.warmup_ratio <= 1.0:
        raise OFAValueError(f"warmup-ratio must be in [0, 1], got {args.warmup_ratio}")


def _check_settings(
    out: Path, args: argparse.Namespace, init_file: Path | None, resuming: bool
) -> None:
    """Record the run's options (and its init weights' fingerprint); a resume must match them."""
    path = out / SETTINGS_FILE
    want = {k: getattr(args, k) for k in _RUN_OPTIONS} | {"data": str(args.data)}
    want = json.loads(json.dumps(want))
    if resuming and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in want.items() if old.get(k) != v}
        if diff:
            raise OFAValueError(
                f"{out}: its checkpoints were trained with other options {diff} (old, new); "
                "resume with the same options or train into another --out"
            )
        return
    if init_file is not None:
        want["init_weights"] = weights_fingerprint(init_file)
    write_atomic(path, json.dumps(want, indent=2) + "\n")


# --------------------------------------------------------------------------- loop
def train(args: argparse.Namespace) -> list[dict[str, float]]:
    """Run the training loop of ``ofa train``; returns the metric rows logged by this run.

    Rank 0 holds ``OUT``'s lock for the whole run: a second run on the same folder stops at once.
    """
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    ddp, device = _init_distributed(args.device)
    with RunLock(args.out, "ofa train") if ddp.main else nullcontext():
        return _train(args, ddp, device)


def _train(args: argparse.Namespace, ddp: _Dist, device: torch.device) -> list[dict[str, float]]:
    out: Path = args.out
    resume_from = latest_checkpoint(out) if args.resume else None
    examples = repeat_tasks(load_examples(args.data, args.task), args.repeat)
    if args.resume and resume_from is None and ddp.main:
        print(f"no checkpoint under {out / CHECKPOINTS}: starting from scratch", file=sys.stderr)
    init_file: Path | None = None
    if resume_from is not None:
        model = load_model(resume_from, device=device)
        tok = OFATokenizer.from_pretrained(out)
        preprocessing = json.loads((out / PIPELINE_FILE).read_text())
        size, interp = preprocessing["image_size"], preprocessing["interpolation"]
    else:
        model, tok, size, interp = _build(args, examples)
        init_file = model.weights_file
        model.to(device)
        if args.backbone_steps:  # OFA starts from a pretrained ResNet; our stand-in for ImageNet
            pretrain_backbone(
                model.encoder.embed_images, args.data, args.backbone_steps, size,
                cast(Interpolation, interp),
                seed=args.seed, log_every=args.log_every * 5,
            )  # fmt: skip
    if args.freeze_embeddings:  # OFA --freeze-encoder-embedding --freeze-decoder-embedding (tied)
        model.embed_tokens.weight.requires_grad_(False)
    if args.freeze_resnet:  # OFA --freeze-resnet
        model.encoder.embed_images.requires_grad_(False)

    dataset = TrainingDataset(
        examples, tok, size, interp, args.max_source_length, cache_images=args.cache_images
    )
    dataset.preload()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay
    )
    warmup = math.ceil(args.warmup_ratio * args.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_lambda, total=args.steps, warmup=warmup)
    )
    ema = _EMA(model, args.ema) if args.ema > 0 else None
    torch.manual_seed(args.seed + ddp.rank)  # dropout masks differ per rank
    start = 0
    if resume_from is not None:
        state = torch.load(resume_from / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        start = int(state["step"])
        if len(state["rng"]) == ddp.world:
            _set_rng_state(state["rng"][ddp.rank])
    elif ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out)
        pipeline = {"image_size": size, "interpolation": interp}
        (out / PIPELINE_FILE).write_text(json.dumps(pipeline, indent=2) + "\n")
        (out / METRICS_FILE).unlink(missing_ok=True)
    if ddp.main:
        _check_settings(out, args, init_file, resume_from is not None)
        _trim_metrics(out / METRICS_FILE, start)

    sampler = StepSampler(
        len(dataset), args.batch_size, args.accum, ddp.rank, ddp.world, args.seed, start, args.steps
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=args.workers,
        collate_fn=functools.partial(
            collate, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id
        ),
        # its own generator: creating the iterator must not draw from the global (dropout) RNG
        generator=torch.Generator().manual_seed(args.seed),
    )
    net: torch.nn.Module = model
    if ddp.world > 1:
        net = DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=True,  # the image-code (generation) branch is idle here
        )
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16")

    rows: list[dict[str, float]] = []
    window: list[float] = []
    window_tokens, window_start, t0 = 0, time.perf_counter(), time.perf_counter()
    bar = tqdm(
        total=args.steps,
        initial=start,
        disable=not ddp.main or args.no_progress,
        dynamic_ncols=True,
    )
    batches = iter(loader)
    for step in range(start, args.steps):
        _set_train_mode(model, args.freeze_resnet)
        micro = [next(batches) for _ in range(args.accum)]
        counts = torch.tensor(float(sum(int(b["labels"].ne(IGNORE_INDEX).sum()) for b in micro)))
        if ddp.world > 1:
            counts = counts.to(device)
            dist.all_reduce(counts)
        n_tokens = counts.item()
        loss_sum = torch.zeros((), device=device)
        for i, batch in enumerate(micro):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            sync = nullcontext() if last or ddp.world == 1 else net.no_sync()  # type: ignore[operator]
            with sync:
                with autocast:
                    logits = net(
                        batch["input_ids"], batch["images"], batch["decoder_input_ids"]
                    ).logits
                loss, _ = label_smoothed_loss(logits, batch["labels"], args.label_smoothing)
                # DDP averages gradients over ranks: scale so the result is sum / global tokens
                (loss * ddp.world / n_tokens).backward()
            loss_sum += loss.detach()
            window_tokens += int(batch["input_ids"].numel() + batch["decoder_input_ids"].numel())
        if args.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = float(scheduler.get_last_lr()[0])
        scheduler.step()
        if ema is not None:
            ema.update(model)
        if ddp.world > 1:
            dist.all_reduce(loss_sum)
        step_loss = loss_sum.item() / n_tokens
        window.append(step_loss)
        done = step + 1
        bar.update(1)
        if done % args.log_every == 0 or done == args.steps:
            now = time.perf_counter()
            row = {
                "step": done,
                "epoch": done / sampler.steps_per_epoch,
                "loss": sum(window) / len(window),
                "lr": lr,
                "tokens_per_s": window_tokens * ddp.world / (now - window_start),
                "elapsed_s": now - t0,
            }
            rows.append(row)
            window, window_tokens, window_start = [], 0, now
            if ddp.main:
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
                _write_metrics(out / METRICS_FILE, [_fmt(row)])
                if args.no_progress:
                    print(", ".join(f"{k} {v}" for k, v in _fmt(row).items()), flush=True)
        if done % args.save_every == 0 or done == args.steps:
            _save(out, done, model, optimizer, scheduler, ema, ddp)
    bar.close()
    if ddp.main:
        history = read_metrics(out / METRICS_FILE)
        plot_loss([r["step"] for r in history], [r["loss"] for r in history], out / PLOT_FILE)
    if ddp.world > 1:
        dist.destroy_process_group()
    return rows


def _fmt(row: dict[str, float]) -> dict[str, str]:
    return {
        "step": str(int(row["step"])),
        "epoch": f"{row['epoch']:.4f}",
        "loss": f"{row['loss']:.7g}",
        "lr": f"{row['lr']:.6g}",
        "tokens_per_s": f"{row['tokens_per_s']:.1f}",
        "elapsed_s": f"{row['elapsed_s']:.1f}",
    }


def _save(
    out: Path,
    step: int,
    model: OFA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: _EMA | None,
    ddp: _Dist,
) -> None:
    """Write ``checkpoints/step_N`` (weights + train state) and the model folder's weights.

    Each file is written to a temporary name and renamed; the step folder appears complete or not
    at all. Every rank's RNG state is gathered so a resume with the same world size is exact.
    """
    rng: list[Any] = [None] * ddp.world
    if ddp.world > 1:
        dist.all_gather_object(rng, _rng_state())
    else:
        rng = [_rng_state()]
    if not ddp.main:
        return
    final = out / CHECKPOINTS / f"step_{step:07d}"
    tmp = _atomic_dir(final)
    save_pretrained(model, tmp / "model.safetensors")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.model.state_dict() if ema is not None else {},
        "rng": rng,
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    save_pretrained(ema.model if ema is not None else model, out / "model.safetensors")
    for old in sorted((out / CHECKPOINTS).glob("step_*[0-9]"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)


def train_command(args: argparse.Namespace) -> int:
    """``ofa train``: returns the process exit status."""
    train(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ofa train", description=__doc__.splitlines()[0])
    add_train_args(parser)
    return train_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
