"""Supervised pretraining of the image backbone on per-patch labels of the shapes world.

OFA never trains its ResNet from scratch: pretraining loads ImageNet weights
(``OFA:run_scripts/pretraining/pretrain_ofa_base.sh --resnet-model-path``). A model of the synthetic
world has no such weights, so ``ofa train --backbone-steps N`` first teaches the ResNet, for every cell
of its (h, w) output grid, the colour, shape and size of the object covering the cell (or "none")
and that object's box relative to the cell centre. The labels come from ``scenes.json``
(:mod:`ofa_vl.shapes.world`); the 1x1 prediction head is thrown away afterwards.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..images import Interpolation, preprocess
from ..shapes.text import COLOURS, SHAPES, SIZES

ATTRIBUTES = (COLOURS, SHAPES, SIZES)  # class 0 of each = no object in the cell
MIN_COVER = 0.2  # a cell belongs to the object whose box covers most of it, if >= this share
BOX_WEIGHT = 10.0  # L1 of box offsets (in image sides) vs the cross-entropies
PATCH = 16  # the ResNet's output stride


def patch_labels(
    objects: list[dict[str, Any]], image_size: int, grid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of a ``grid`` x ``grid`` cell layout over a square image of ``image_size`` px.

    Returns classes (g, g, 3) int64 (colour, shape, size; 0 = none), box offsets (g, g, 4) float32
    (``[x0 - cx, y0 - cy, x1 - cx, y1 - cy] / image_size`` for the cell centre ``cx, cy``) and the
    (g, g) mask of cells that have an object.
    """
    cell = image_size / grid
    classes = np.zeros((grid, grid, 3), np.int64)
    offsets = np.zeros((grid, grid, 4), np.float32)
    mask = np.zeros((grid, grid), bool)
    for i in range(grid):
        for j in range(grid):
            x0, y0 = j * cell, i * cell
            best, owner = MIN_COVER * cell * cell, None
            for obj in objects:
                bx0, by0, bx1, by1 = obj["box"]
                w = min(bx1, x0 + cell) - max(bx0, x0)
                h = min(by1, y0 + cell) - max(by0, y0)
                if w > 0 and h > 0 and w * h > best:
                    best, owner = w * h, obj
            if owner is None:
                continue
            values = (owner["colour"], owner["shape"], owner["size"])
            classes[i, j] = [names.index(v) + 1 for names, v in zip(ATTRIBUTES, values)]
            centre = np.array([x0, y0, x0, y0], np.float32) + cell / 2
            offsets[i, j] = (np.asarray(owner["box"], np.float32) - centre) / image_size
            mask[i, j] = True
    return classes, offsets, mask


def _load(
    data: Path, size: int, interpolation: Interpolation
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every training scene: images (N, 3, S, S) and their patch labels."""
    meta = json.loads((data / "scenes.json").read_text())
    scenes = [s for s in meta["scenes"] if s["split"] == "train"]
    grid = size // PATCH
    images = [preprocess(data / s["image"], size, interpolation)[0] for s in scenes]
    labels = [patch_labels(s["objects"], s["image_size"], grid) for s in scenes]
    classes, offsets, mask = (torch.from_numpy(np.stack(parts)) for parts in zip(*labels))
    return torch.stack(images), classes, offsets, mask


def pretrain_backbone(
    resnet: nn.Module,
    data: Path,
    steps: int,
    image_size: int,
    interpolation: Interpolation = Interpolation.BILINEAR,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 100,
) -> list[dict[str, float]]:
    """Train ``resnet`` in place for ``steps`` AdamW steps (one-cycle lr); metrics of each step."""
    images, classes, offsets, mask = _load(Path(data), image_size, interpolation)
    device = next(resnet.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        channels = resnet(images[:1].to(device)).shape[1]
    head = nn.Conv2d(channels, sum(len(a) + 1 for a in ATTRIBUTES) + 4, 1).to(device)
    params = [*resnet.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    resnet.train()
    start, history = time.time(), []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        cls, box, m = classes[idx].to(device), offsets[idx].to(device), mask[idx].to(device)
        out = head(resnet(images[idx].to(device))).permute(0, 2, 3, 1)  # (B, h, w, K)
        loss, k, accs = out.new_zeros(()), 0, []
        for a, names in enumerate(ATTRIBUTES):
            logits = out[..., k : k + len(names) + 1]
            loss = loss + F.cross_entropy(logits.flatten(0, 2), cls[..., a].flatten())
            accs.append((logits.argmax(-1)[m] == cls[..., a][m]).float().mean().item())
            k += len(names) + 1
        box_l1 = F.l1_loss(out[..., k:][m], box[m])
        loss = loss + BOX_WEIGHT * box_l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        metrics = {"loss": loss.item(), "box_l1_px": box_l1.item() * image_size}
        metrics |= {f"acc_{n}": v for n, v in zip(("colour", "shape", "size"), accs)}
        history.append(metrics)
        if step % log_every == 0 or step == steps:
            shown = ", ".join(f"{n} {v:.3f}" for n, v in metrics.items())
            print(
                f"backbone step {step}/{steps}, {shown}, {time.time() - start:.0f} s",
                file=sys.stderr,
            )
    return history
