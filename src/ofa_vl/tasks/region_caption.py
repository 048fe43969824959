"""Grounded captioning (OFA pretraining, OFA:data/pretrain_data/unify_dataset.py): describe the
region given as 4 bin tokens after ``'  what does the region describe? region:'``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import OFAValueError
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..text import clean_caption
from .base import Task, TaskFields, register_task
from .results import RegionCaptionResult, Result
from .samples import Example, Sample, caption_target, column_box, column_texts

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer

# two leading spaces: the pretraining data has them (an extra lone "Ġ" token, id 1437)
REGION_PROMPT = "  what does the region describe? region:"


def check_box(box: Any, name: str = "region") -> list[float]:
    """``[x0, y0, x1, y1]`` pixels with x0 < x1 and y0 < y1, or ``ValueError``."""
    try:
        x0, y0, x1, y1 = (float(c) for c in box)
    except (TypeError, ValueError):
        raise OFAValueError(
            f"{name} must be a box [x0, y0, x1, y1] in pixels, got {box!r}"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise OFAValueError(f"{name} [x0, y0, x1, y1] needs x0 < x1 and y0 < y1, got {box!r}")
    return [x0, y0, x1, y1]


@dataclass(frozen=True)
class RegionFields(TaskFields):
    region: Sequence[float]  # [x0, y0, x1, y1] in pixels, checked by check_box


@dataclass(frozen=True)
class PlacedRegion(RegionFields):
    """The region with its bin tokens for one image's resize (what the prompt reads)."""

    bins: str


@register_task
@dataclass
class RegionCaption(Task[RegionFields]):
    name = "region_caption"
    aliases = ("grounded_caption", "grounded_captioning")
    Fields = RegionFields
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)  # official OFA: PIL bicubic Resize
    result_type = RegionCaptionResult
    metric = "caption"
    folder_columns = ("caption", "box|bbox")  # describe a region

    def check(self, fields: Mapping[str, Any]) -> None:
        check_box(fields.get("region"))

    def prompt(self, fields: RegionFields) -> str:
        if not isinstance(fields, PlacedRegion):  # a bug: the runner places it first
            raise TypeError("region_caption's prompt needs the region placed (with_image)")
        return f"{REGION_PROMPT} {fields.bins}"

    def with_image(
        self, fields: RegionFields, info: ImageInfo, tokenizer: OFATokenizer
    ) -> RegionFields:
        """The region quantised with this image's resize ratios (OFA-NOTES 2.2)."""
        bins = tokenizer.box_to_tokens(check_box(fields.region), *info.scale_factor)
        return PlacedRegion(fields.region, bins)

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: RegionFields
    ) -> Result:
        caption = clean_caption(tokenizer.decode(tokens, skip_special_tokens=True))
        return RegionCaptionResult(check_box(fields.region), caption)

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        captions = column_texts(row, "caption", "captions")
        return {"region": list(column_box(row, size))}, captions

    def examples(self, sample: Sample) -> list[Example]:
        """``REGION_PROMPT`` + the region's 4 bin tokens -> ``" {caption}"``, one example per
        caption (the prompt is built with the bins of the image's resize in training)."""
        x0, y0, x1, y1 = sample.fields["region"]
        region = (x0, y0, x1, y1)
        return [
            Example(self.name, sample.image, REGION_PROMPT, caption_target(c), region=region)
            for c in sample.truth
        ]
