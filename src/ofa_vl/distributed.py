"""torchrun for training and evaluation: this process's rank and device, and the process group.

One process per device, as torchrun starts them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): gloo on
the CPU, nccl on GPUs (nanoGPT's ``train.py``, OFA's ``evaluate.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .options import check_device

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place among the torchrun workers (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order (all ranks get them)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device of this process: ``None`` / ``"auto"`` is CUDA when there is one, and ``cuda``
    means this torchrun worker's ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = None
    check_device(device)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def init_distributed(device: torch.device) -> tuple[Dist, bool]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (creating it unless a caller did);
    returns this process's :class:`Dist` and whether the group was created here."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), False
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return Dist(dist.get_rank(), dist.get_world_size(), local), created
