"""Image-text matching (OFA pretraining ITM, OFA:data/pretrain_data/unify_dataset.py): does the
image match the text? `` yes`` and `` no`` are scored by teacher forcing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..text import TextNorm
from .base import TextFields, register_task
from .results import MatchResult, Result
from .samples import ColumnError, column_text
from .scored import ScoringTask

_YES_NO = {"yes": "yes", "true": "yes", "1": "yes", "no": "no", "false": "no", "0": "no"}


@register_task
@dataclass
class Matching(ScoringTask[TextFields]):
    name = "itm"
    aliases = ("matching", "image_text_matching")
    Fields = TextFields  # the caption to match
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)  # official OFA: PIL bicubic Resize
    result_type = MatchResult
    metric = "exact"
    folder_columns = ("caption", "label")  # label yes/no (true/false, 1/0)
    text_norm: dict[str, TextNorm] = field(default_factory=lambda: {"text": TextNorm.PRE_CAPTION})

    def prompt(self, fields: TextFields) -> str:
        return f' does the image describe " {fields.text} "?'

    def candidates(self) -> Sequence[str]:
        return ("yes", "no")  # OFA unify_dataset pos_tgt_item / neg_tgt_item

    def report(self, scores: torch.Tensor, names: Sequence[str], fields: TextFields) -> Result:
        p_yes = float(scores.softmax(0)[0])  # p(yes) / (p(yes) + p(no))
        return MatchResult(fields.text, p_yes > 0.5, p_yes)

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        label = _YES_NO.get(column_text(row, "label").lower())
        if label is None:
            raise ColumnError(
                f"matching label must be yes/no (true/false, 1/0), got {row['label']!r}"
            )
        return {"text": column_text(row, "caption")}, label

    def answer(self, result: Result) -> str:
        assert isinstance(result, MatchResult)
        return "yes" if result.match else "no"
