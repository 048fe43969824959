"""VQA by all-candidate scoring, the official default evaluation (OFA-NOTES 2.4,
``OFA:utils/eval_utils.py eval_vqa_gen``): every answer of ``answers`` is scored after the question
as decoder prompt; the best one is the answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import OFAValueError
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..text import TextNorm
from .base import register_task
from .results import Result, VQAResult
from .scored import PromptType, ScoringTask
from .vqa import VQAFields, vqa_question


@register_task
@dataclass
class VQAScoring(ScoringTask[VQAFields]):
    name = "vqa_allcand"
    aliases = ("vqa_scoring",)
    Fields = VQAFields
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)  # as vqa (OFA: torchvision Resize)
    result_type = VQAResult
    metric = "vqa"
    prompt_type: PromptType = "prev_output"  # OFA:run_scripts/vqa/evaluate_vqa_allcand*.sh
    text_norm: dict[str, TextNorm] = field(  # the official evaluation: OFA's pre_question
        default_factory=lambda: {"question": TextNorm.PRE_QUESTION}
    )
    answers: Sequence[str] | None = None  # ans2label: the candidates

    def prompt(self, fields: VQAFields) -> str:
        return " " + vqa_question(fields)

    def candidates(self) -> Sequence[str]:
        if not self.answers:
            raise OFAValueError("task 'vqa_allcand' needs answers=[...] or an ans2label file")
        return self.answers

    def report(self, scores: torch.Tensor, names: Sequence[str], fields: VQAFields) -> Result:
        # the best candidate's log-probability is this result's score, and in its dict
        return VQAResult(vqa_question(fields), names[int(scores.argmax())], with_score=True)
