"""The training loop, in parts: :func:`setup` (data, model, optimizer, resume), :meth:`Trainer.step`
(one optimizer step over its micro-batches), :meth:`Trainer.log`, :meth:`Trainer.validate` and
:meth:`Trainer.save`; :func:`train` runs them."""

from __future__ import annotations

import functools
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.training import IGNORE_INDEX, TrainingDataset, collate
from ..distributed import Dist, init_distributed, resolve_device
from ..errors import OFAValueError
from ..model import OFA
from ..preprocess import PreprocessConfig
from ..runs import RunLock
from ..tokenizer import OFATokenizer
from .backbone import pretrain_backbone
from .build import Start, build, read_data, run_settings
from .checkpointing import (
    CHECKPOINTS,
    check_settings,
    latest_checkpoint,
    load_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig
from .logs import METRICS_FILE, format_row, plot_run, trim_metrics, write_metrics
from .objective import EMA, StepSampler, label_smoothed_loss, lr_lambda, set_train_mode
from .validation import Validator

Batch = dict[str, torch.Tensor]


@dataclass
class Trainer:
    """One run's state between steps."""

    cfg: TrainConfig
    ddp: Dist
    device: torch.device
    model: OFA
    tokenizer: OFATokenizer
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    sampler: StepSampler
    batches: Any  # the DataLoader's iterator
    validator: Validator | None
    start: int
    net: torch.nn.Module = field(init=False)
    rows: list[dict[str, float]] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    window_tokens: int = 0
    window_start: float = field(default_factory=time.perf_counter)
    t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.net = self.model
        if self.ddp.world > 1:
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # the image-code (generation) branch is idle here
            )

    @property
    def weights(self) -> OFA:
        """The weights a run publishes (the EMA's when there is one)."""
        return self.ema.model if self.ema is not None else self.model

    def step(self) -> float:
        """One optimizer step over ``accum`` micro-batches; the step's mean token loss."""
        cfg, ddp = self.cfg, self.ddp
        set_train_mode(self.model, cfg.freeze_resnet)
        micro: list[Batch] = [next(self.batches) for _ in range(cfg.accum)]
        counts = torch.tensor(float(sum(int(b["labels"].ne(IGNORE_INDEX).sum()) for b in micro)))
        if ddp.world > 1:
            counts = counts.to(self.device)
            dist.all_reduce(counts)
        n_tokens = counts.item()
        autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.precision == "bf16")
        loss_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            sync = nullcontext() if last or ddp.world == 1 else self.net.no_sync()  # type: ignore[operator]
            with sync:
                with autocast:
                    logits = self.net(
                        batch["input_ids"], batch["images"], batch["decoder_input_ids"]
                    ).logits
                loss, _ = label_smoothed_loss(logits, batch["labels"], cfg.label_smoothing)
                # DDP averages gradients over ranks: scale so the result is sum / global tokens
                (loss * ddp.world / n_tokens).backward()
            loss_sum += loss.detach()
            self.window_tokens += int(
                batch["input_ids"].numel() + batch["decoder_input_ids"].numel()
            )
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if ddp.world > 1:
            dist.all_reduce(loss_sum)
        return loss_sum.item() / n_tokens

    def log(self, done: int, lr: float) -> dict[str, float]:
        """The metrics row of the steps since the last one."""
        now = time.perf_counter()
        row = {
            "step": done,
            "epoch": done / self.sampler.steps_per_epoch,
            "loss": sum(self.window) / len(self.window),
            "lr": lr,
            "tokens_per_s": self.window_tokens * self.ddp.world / (now - self.window_start),
            "elapsed_s": now - self.t0,
        }
        self.rows.append(row)
        self.window, self.window_tokens, self.window_start = [], 0, now
        return row

    def validate(self, done: int) -> float:
        """Score the validation split; rank 0 keeps the best weights."""
        assert self.validator is not None
        value = self.validator.score(self.weights, self.tokenizer, self.cfg.out, done, self.ddp)
        if self.validator.update(value, done) and self.ddp.main:
            self.validator.keep_best(self.cfg.out, self.weights, self.tokenizer)
        return value

    def save(self, done: int) -> None:
        extra = {"validation": self.validator.state()} if self.validator is not None else {}
        save_checkpoint(self.cfg.out, done, self.model, self.optimizer, self.scheduler, self.ema,
                        self.ddp, extra)  # fmt: skip

    def run(self) -> list[dict[str, float]]:
        """Steps from :attr:`start` to the end (or an early stop); the rows logged."""
        cfg, main = self.cfg, self.ddp.main
        bar = tqdm(total=cfg.steps, initial=self.start, disable=not main or cfg.no_progress,
                   dynamic_ncols=True)  # fmt: skip
        for step in range(self.start, cfg.steps):
            lr = float(self.scheduler.get_last_lr()[0])
            self.window.append(self.step())
            done = step + 1
            bar.update(1)
            last = done == cfg.steps
            row: dict[str, float] = {}
            if done % cfg.log_every == 0 or last:
                row = self.log(done, lr)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
            if self.validator is not None and (done % cfg.val_every == 0 or last):
                row = {"step": done, **row, "val_metric": self.validate(done)}
            if row and main:
                write_metrics(cfg.out / METRICS_FILE, [format_row(row)])
                if cfg.no_progress:
                    print(", ".join(f"{k} {v}" for k, v in format_row(row).items()), flush=True)
            stop = self.validator is not None and self.validator.stop
            if done % cfg.save_every == 0 or last or stop:
                self.save(done)
            if stop:
                if main:
                    print(f"early stop at step {done}: {cfg.early_stop} validations without a "
                          "better one", file=sys.stderr)  # fmt: skip
                break
        bar.close()
        if main:
            plot_run(cfg.out, self.validator.metric if self.validator else "")
        return self.rows


def setup(cfg: TrainConfig, ddp: Dist, device: torch.device) -> Trainer:
    """Data, model, optimizer and schedule of a run; its state when it resumes."""
    out = cfg.out
    resume_from = latest_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None and ddp.main:
        print(f"no checkpoint under {out / CHECKPOINTS}: starting from scratch", file=sys.stderr)
    folder = read_data(cfg, ddp)
    start = build(cfg, folder, resume_from)
    model = start.model.to(device)
    if cfg.backbone_steps and resume_from is None:  # OFA starts from a pretrained ResNet
        pre = start.preprocessing
        pretrain_backbone(model.encoder.embed_images, cfg.data, cfg.backbone_steps, pre.image_size,
                          pre.interpolation, seed=cfg.seed, log_every=cfg.log_every * 5)  # fmt: skip
    if cfg.freeze_embeddings:  # OFA --freeze-encoder-embedding --freeze-decoder-embedding (tied)
        model.embed_tokens.weight.requires_grad_(False)
    if cfg.freeze_resnet:  # OFA --freeze-resnet
        model.encoder.embed_images.requires_grad_(False)
    validator = None
    if cfg.val_every:
        if folder is None:
            raise OFAValueError(
                "--val-every needs --data in the folder format (ofa_vl.data.folder)"
            )
        given = {"num_beams": cfg.val_beams, "max_new_tokens": cfg.val_max_new_tokens}
        generation = {k: v for k, v in given.items() if v is not None}
        validator = Validator.for_folder(folder, start.tasks, cfg.init, generation=generation,
                                         batch_size=cfg.batch_size, early_stop=cfg.early_stop)  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(cfg, params)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    torch.manual_seed(cfg.seed + ddp.rank)  # dropout masks differ per rank
    step = 0
    if resume_from is not None:
        state = load_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        if validator is not None and "validation" in state:
            validator.load_state(state["validation"])
        step = int(state["step"])
        if len(state["rng"]) == ddp.world:
            set_rng_state(state["rng"][ddp.rank])
    elif ddp.main:
        _new_run_folder(cfg, start.tokenizer, start.preprocessing)
    if ddp.main:
        check_settings(out, cfg.run_settings(), start.init_file, resume_from is not None)
        trim_metrics(out / METRICS_FILE, step)
    tok = start.tokenizer
    sampler, loader = _loader(cfg, start, ddp, step)
    return Trainer(cfg, ddp, device, model, tok, params, optimizer, scheduler, ema, sampler,
                   iter(loader), validator, step)  # fmt: skip


def _optimizer(
    cfg: TrainConfig, params: list[torch.nn.Parameter]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with OFA's betas and eps; linear warm-up then linear decay."""
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay
    )
    warmup = math.ceil(cfg.warmup_ratio * cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_lambda, total=cfg.steps, warmup=warmup)
    )
    return optimizer, scheduler


def _loader(cfg: TrainConfig, start: Start, ddp: Dist, step: int) -> tuple[StepSampler, Any]:
    """This rank's micro-batches from optimizer step ``step`` on."""
    pre = start.preprocessing  # the model's whole image preprocessing, as inference reads it
    dataset = TrainingDataset(start.examples, start.tokenizer, pre.image_size, pre.interpolation,
                              cfg.max_source_length, cfg.cache_images, preprocessing=pre)  # fmt: skip
    dataset.preload()
    sampler = StepSampler(len(dataset), cfg.batch_size, cfg.accum, ddp.rank, ddp.world, cfg.seed,
                          step, cfg.steps)  # fmt: skip
    tok = start.tokenizer
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=functools.partial(
            collate, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id
        ),
        # its own generator: creating the iterator must not draw from the global (dropout) RNG
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return sampler, loader


def _new_run_folder(cfg: TrainConfig, tok: OFATokenizer, pre: PreprocessConfig) -> None:
    run_settings(pre).write(cfg.out, tokenizer=tok)
    (cfg.out / METRICS_FILE).unlink(missing_ok=True)


def train(args: Any) -> list[dict[str, float]]:
    """Run ``ofa train`` (a :class:`TrainConfig` or the parsed arguments); returns the metric rows
    logged by this run. Rank 0 holds ``OUT``'s lock for the whole run: a second run on the same
    folder stops at once."""
    cfg = TrainConfig.from_args(args)
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    ddp, created = init_distributed(device)
    try:
        with RunLock(cfg.out, "ofa train") if ddp.main else nullcontext():
            return setup(cfg, ddp, device).run()
    finally:
        if created:
            dist.destroy_process_group()
