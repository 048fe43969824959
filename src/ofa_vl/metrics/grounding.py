"""Visual grounding metrics on XYXY boxes: IoU, Acc@0.5 (OFA's rule) and mean IoU; the precision
and recall of rejecting queries whose object is not in the image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

BoxesLike = torch.Tensor | np.ndarray | Sequence[Sequence[float]]


def _as_boxes(boxes: BoxesLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(boxes, dtype=torch.float64)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"{name}: expected XYXY boxes of shape (N, 4), got {tuple(t.shape)}")
    return t


def _overlap(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed overlap width/height (N, 2) and the summed areas (N,) of aligned box pairs."""
    if b1.shape != b2.shape:
        raise ValueError(f"box counts differ: {b1.shape[0]} vs {b2.shape[0]}")
    wh = torch.minimum(b1[:, 2:], b2[:, 2:]) - torch.maximum(b1[:, :2], b2[:, :2])  # (N, 2)
    areas = (b1[:, 2:] - b1[:, :2]).prod(1) + (b2[:, 2:] - b2[:, :2]).prod(1)  # (N,)
    return wh, areas


def box_iou(boxes1: BoxesLike, boxes2: BoxesLike) -> torch.Tensor:
    """IoU of aligned pairs of XYXY boxes, shape (N,) float64 (0 where the union is empty)."""
    wh, areas = _overlap(_as_boxes(boxes1, "boxes1"), _as_boxes(boxes2, "boxes2"))
    inter = wh.clamp(min=0).prod(1)
    union = areas - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def grounding_metrics(
    pred_boxes: BoxesLike, gt_boxes: BoxesLike, threshold: float = 0.5
) -> dict[str, float]:
    """Grounding accuracy and mean IoU of predicted vs ground-truth XYXY boxes, as fractions.

    ``acc``: share of pairs with IoU >= ``threshold`` and a positive overlap in x and y, the IoU
    taken with OFA's ``+1e-6`` in the denominator (OFA:utils/eval_utils.py ``eval_refcoco``), so
    an IoU of exactly 0.5 does not count. ``miou``: mean plain IoU (mmpretrain's
    ``VisualGroundingMetric``).
    """
    b1, b2 = _as_boxes(pred_boxes, "pred_boxes"), _as_boxes(gt_boxes, "gt_boxes")
    if b1.shape[0] == 0:
        raise ValueError("grounding_metrics got no boxes")
    wh, areas = _overlap(b1, b2)
    inter = wh.clamp(min=0).prod(1)
    hits = (inter / (areas - inter + 1e-6) >= threshold) & (wh > 0).all(1)
    return {"acc": hits.double().mean().item(), "miou": box_iou(b1, b2).mean().item()}


def rejection_metrics(
    confidences: Sequence[float], absent: Sequence[bool], threshold: float
) -> dict[str, float]:
    """Rejecting a query when its box's confidence is below ``threshold``: ``precision`` (share
    of the rejected queries whose object is absent) and ``recall`` (share of the absent ones
    rejected), as fractions (precision 1 when nothing is rejected)."""
    if len(confidences) != len(absent) or not any(absent):
        raise ValueError("rejection_metrics needs one flag per confidence and an absent query")
    rejected = [c < threshold for c in confidences]
    hits = sum(r and a for r, a in zip(rejected, absent))
    return {
        "precision": hits / max(sum(rejected), 1) if any(rejected) else 1.0,
        "recall": hits / sum(absent),
    }


def best_threshold(confidences: Sequence[float], absent: Sequence[bool]) -> float:
    """The rejection threshold of the best F1 on a validation set: the midpoint between two
    neighbouring confidences (the lower one of the first best)."""
    ranked = sorted(set(confidences))
    cuts = [(a + b) / 2 for a, b in zip(ranked, ranked[1:])] or ranked

    def f1(t: float) -> float:
        m = rejection_metrics(confidences, absent, t)
        return 2 * m["precision"] * m["recall"] / max(m["precision"] + m["recall"], 1e-12)

    return max(cuts, key=f1)
