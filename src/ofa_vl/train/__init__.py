"""``ofa train``: fine-tune or train OFA from scratch on one task, a mixture, or your own folder.

The recipe is OFA's (``OFA:run_scripts/*/train_*.sh``, ``OFA:criterions/label_smoothed_cross_entropy.py``,
OFA-NOTES 2.6): label-smoothed cross-entropy on target tokens, AdamW, linear warm-up then linear
decay, gradient clipping, optional EMA. The loop is nanoGPT-style: DDP through the torchrun
environment variables, bf16 autocast, rank 0 logs and saves.

Determinism: the example order of epoch ``e`` is ``randperm(n, seed=(seed, e))``; optimizer step
``s`` takes the slice ``[s * G, (s + 1) * G)`` of it (``G`` = batch x world x accumulation), split
into micro-batches per accumulation step and rank. A checkpoint stores weights, optimizer,
scheduler, EMA, RNG states, the validation record and the step, so ``--resume`` continues
bit-for-bit on the CPU (on a GPU to float tolerance: some CUDA backward kernels are not
deterministic). The loss of a step is summed over its target tokens on every rank and divided by
their global count, so any split of the same global batch into ranks and accumulation steps
computes the same gradient. Validation runs on forked RNG streams: it changes no weight.

Modules: :mod:`.config` (options), :mod:`.build` (data, model, tasks), :mod:`.objective` (loss,
schedule, data order, EMA), :mod:`.loop` (the steps), :mod:`.validation`, :mod:`.checkpointing`,
:mod:`.logs` (``metrics.csv``, ``loss.png``), :mod:`.backbone` (shapes ResNet pretraining).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .checkpointing import BEST, BEST_FILE, CHECKPOINTS, STATE_FILE, latest_checkpoint
from .config import TrainConfig, add_train_args
from .logs import METRICS_FILE, PLOT_FILE, plot_loss, read_metrics
from .loop import train
from .objective import StepSampler, label_smoothed_loss, lr_lambda, repeat_tasks

__all__ = [
    "BEST",
    "BEST_FILE",
    "CHECKPOINTS",
    "METRICS_FILE",
    "PLOT_FILE",
    "STATE_FILE",
    "StepSampler",
    "TrainConfig",
    "add_train_args",
    "label_smoothed_loss",
    "latest_checkpoint",
    "lr_lambda",
    "main",
    "plot_loss",
    "read_metrics",
    "repeat_tasks",
    "train",
    "train_command",
]


def train_command(args: argparse.Namespace) -> int:
    """``ofa train``: returns the process exit status."""
    train(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ofa train", description=(__doc__ or "").splitlines()[0])
    add_train_args(parser)
    return train_command(parser.parse_args(argv))
