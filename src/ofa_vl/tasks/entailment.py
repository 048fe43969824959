"""Visual entailment, SNLI-VE (OFA:data/mm_data/snli_ve_dataset.py, ``eval_snli_ve``): does the
image (and an optional premise text) imply the hypothesis? yes / no / maybe by all-candidate scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import OFAValueError
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..text import TextNorm
from .base import TaskFields, register_task
from .results import EntailmentResult, Result
from .scored import PromptType, ScoringTask

# OFA:data/mm_data/snli_ve_dataset.py: the answer words of the three SNLI labels
LABELS = {"yes": "entailment", "no": "contradiction", "maybe": "neutral"}


@dataclass(frozen=True)
class EntailmentFields(TaskFields):
    hypothesis: str
    premise: str | None = None  # a text the image comes with (--add-caption)


@register_task
@dataclass
class Entailment(ScoringTask[EntailmentFields]):
    name = "snli_ve"
    aliases = ("entailment", "visual_entailment")
    Fields = EntailmentFields
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)  # official OFA: PIL bicubic Resize
    result_type = EntailmentResult
    prompt_type: PromptType = (
        "prev_output"  # OFA:run_scripts/snli_ve/*.sh --prompt-type=prev_output
    )
    text_norm: dict[str, TextNorm] = field(  # OFA:data/mm_data/snli_ve_dataset.py
        default_factory=lambda: {
            "hypothesis": TextNorm.PRE_CAPTION,
            "premise": TextNorm.PRE_CAPTION,
        }
    )

    def check(self, fields: Mapping[str, Any]) -> None:
        super().check(fields)
        if not isinstance(fields.get("premise") or "", str):
            raise OFAValueError(f"task {self.name!r}: the premise must be a text")

    def prompt(self, fields: EntailmentFields) -> str:
        hypothesis = fields.hypothesis
        if premise := fields.premise:  # --add-caption, as the official scripts run it
            return f' can image and text1 " {premise} " imply text2 " {hypothesis} "?'
        return f' does the image describe " {hypothesis} "?'

    def candidates(self) -> Sequence[str]:
        return ("no", "yes", "maybe")  # OFA:tasks/mm_tasks/snli_ve.py ans2label_dict order

    def report(
        self, scores: torch.Tensor, names: Sequence[str], fields: EntailmentFields
    ) -> Result:
        answer = names[int(scores.argmax())]
        by_label = {LABELS[n]: float(s) for n, s in zip(names, scores)}
        return EntailmentResult(fields.hypothesis, answer, LABELS[answer], by_label)
