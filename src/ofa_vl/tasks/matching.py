"""Image-text matching (OFA pretraining ITM, OFA:data/pretrain_data/unify_dataset.py): does the
image match the text? `` yes`` and `` no`` are scored by teacher forcing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..images import Interpolation
from ..text import TextNorm
from .base import TextFields, register_task
from .results import MatchResult, Result
from .scored import ScoringTask


@register_task
@dataclass
class Matching(ScoringTask[TextFields]):
    name = "itm"
    aliases = ("matching", "image_text_matching")
    Fields = TextFields  # the caption to match
    image_size: int = 480
    interpolation: Interpolation = (
        Interpolation.BICUBIC
    )  # official OFA: torchvision Resize, PIL bicubic
    text_norm: dict[str, TextNorm] = field(default_factory=lambda: {"text": TextNorm.PRE_CAPTION})

    def prompt(self, fields: TextFields) -> str:
        return f' does the image describe " {fields.text} "?'

    def candidates(self) -> Sequence[str]:
        return ("yes", "no")  # OFA unify_dataset pos_tgt_item / neg_tgt_item

    def report(self, scores: torch.Tensor, names: Sequence[str], fields: TextFields) -> Result:
        p_yes = float(scores.softmax(0)[0])  # p(yes) / (p(yes) + p(no))
        return MatchResult(fields.text, p_yes > 0.5, p_yes)
