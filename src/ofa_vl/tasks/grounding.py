"""Visual grounding / RefCOCO (OFA:data/mm_data/refcoco_dataset.py): text -> 4 bin tokens -> box.

English (text verbatim, as mmpretrain) and Chinese (OFA-CN's RefCOCO-CN: the official
``pre_caption`` of the text, since there is no mmpretrain config for it) prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import OFAValueError
from ..images import Interpolation
from ..text import pre_caption
from ..tokenizer import bins_to_box
from .base import BilingualTask, TextFields, register_task
from .results import GroundingResult, Result

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


@register_task
@dataclass
class Grounding(BilingualTask[TextFields]):
    name = "refcoco"
    aliases = ("grounding", "visual_grounding")
    Fields = TextFields  # the referring expression
    image_size: int = 512
    interpolation: Interpolation = Interpolation.BILINEAR
    # bins -> pixels: bin/999*512 (official, default) or bin/1000*512 (mmpretrain's post_process)
    divisor: Literal["official", "mmpretrain"] = "official"
    # a box whose confidence is below this is not answered ("not in the image"); None: always
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise OFAValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    def prompt(self, fields: TextFields) -> str:
        if self.language == "zh":  # BertBPE prompt; refcoco's --max-src-length=80
            return f'这段文字" {pre_caption(fields.text, 80)} "描述的是哪个区域？'
        return f' which region does the text " {fields.text} " describe?'

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: TextFields
    ) -> Result:
        body = tokens[1:5]  # mmpretrain post_process: the 4 tokens after <s>
        bins = [t - tokenizer.bin_offset for t in body]
        if len(bins) < 4 or any(not 0 <= b < tokenizer.num_bins for b in bins):
            return GroundingResult(fields.text, [])  # the model did not answer a box
        w_ratio, h_ratio = info.scale_factor
        box = bins_to_box(bins, w_ratio, h_ratio, tokenizer.num_bins, 512, self.divisor)
        return GroundingResult(fields.text, [box])

    def confidence(self, logprobs: Sequence[float]) -> float:
        """The box's probability: the product of its four bin tokens' probabilities."""
        return math.exp(sum(logprobs[:4])) if len(logprobs) >= 4 else 0.0

    def finish(self, result: Result) -> Result:
        """No box when its confidence is under ``min_confidence`` (the object is not there)."""
        low = self.min_confidence is not None and (result.confidence or 0.0) < self.min_confidence
        if low and isinstance(result, GroundingResult):
            result.boxes = []
        return result
