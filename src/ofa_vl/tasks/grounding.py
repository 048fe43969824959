"""Visual grounding / RefCOCO (OFA:data/mm_data/refcoco_dataset.py): text -> 4 bin tokens -> box.

English (text verbatim, as mmpretrain) and Chinese (OFA-CN's RefCOCO-CN: the official
``pre_caption`` of the text, since there is no mmpretrain config for it) prompts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import OFAValueError
from ..preprocess import PreprocessConfig
from ..text import pre_caption
from ..tokenizer import bins_to_box
from .base import BilingualTask, TextFields, register_task
from .results import GroundingResult, Result
from .samples import Example, Sample, column_box, column_text

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..shapes.scene import Scene
    from ..shapes.text import SceneText
    from ..tokenizer import OFATokenizer


@register_task
@dataclass
class Grounding(BilingualTask[TextFields]):
    name = "refcoco"
    aliases = ("grounding", "visual_grounding")
    Fields = TextFields  # the referring expression
    defaults = PreprocessConfig(512)  # bilinear
    result_type = GroundingResult
    metric = "grounding"
    coco_results = True
    # box = [x1, y1, x2, y2] pixels; bbox = COCO's [x, y, w, h] pixels
    folder_columns = ("text", "box|bbox")
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

    def shapes_lines(self, scene: Scene, text: SceneText, name: str) -> list[dict[str, Any]]:
        """One line per object: its first referring expression and its box."""
        return [
            {"file_name": name, "text": t, "box": list(obj.box)}
            for obj, texts in zip(scene.objects, text.expressions, strict=True)
            for t in texts[:1]
        ]

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        return {"text": column_text(row, "text")}, column_box(row, size)

    def examples(self, sample: Sample) -> list[Example]:
        """Referring expression -> the 4 bin tokens of its box."""
        prompt = self.prompt(self.normalize(sample.fields))
        return [Example(self.name, sample.image, prompt, box=sample.truth)]
