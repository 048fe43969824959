"""Evaluation metrics as published: COCO caption (pycocoevalcap), VQA accuracy, grounding."""

from ofa_vl.metrics.caption import (
    MetricError,
    as_percentages,
    caption_metrics,
    load_caption_references,
)
from ofa_vl.metrics.grounding import box_iou, grounding_metrics
from ofa_vl.metrics.vqa import (
    answer_soft_scores,
    normalize_answer,
    question_accuracy,
    vqa_acc_mmpretrain,
    vqa_accuracy,
    vqa_score,
)

__all__ = [
    "MetricError",
    "answer_soft_scores",
    "as_percentages",
    "box_iou",
    "caption_metrics",
    "grounding_metrics",
    "load_caption_references",
    "normalize_answer",
    "question_accuracy",
    "vqa_acc_mmpretrain",
    "vqa_accuracy",
    "vqa_score",
]
