"""VQA by all-candidate scoring, the official default evaluation (OFA-NOTES 2.4,
``OFA:utils/eval_utils.py eval_vqa_gen``): every answer of ``answers`` is scored after the question
as decoder prompt; the best one is the answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import OFAValueError
from ..text import TextNorm
from .base import register_task
from .scored import PromptType, ScoringTask
from .vqa import VQA


@register_task
@dataclass
class VQAScoring(VQA, ScoringTask):
    name = "vqa_allcand"
    aliases = ("vqa_scoring",)
    prompt_type: PromptType = "prev_output"  # OFA:run_scripts/vqa/evaluate_vqa_allcand*.sh
    text_norm: dict[str, TextNorm] = field(  # the official evaluation: OFA's pre_question
        default_factory=lambda: {"question": TextNorm.PRE_QUESTION}
    )

    def candidates(self) -> Sequence[str]:
        if not self.answers:
            raise OFAValueError("task 'vqa_allcand' needs answers=[...] or an ans2label file")
        return self.answers

    def report(
        self, scores: torch.Tensor, names: Sequence[str], fields: dict[str, Any]
    ) -> dict[str, Any]:
        best = int(scores.argmax())
        return {
            "question": self._question(fields),
            "pred_answer": names[best],
            "score": float(scores[best]),
        }
