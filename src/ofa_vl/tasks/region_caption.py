"""Grounded captioning (OFA pretraining, OFA:data/pretrain_data/unify_dataset.py): describe the
region given as 4 bin tokens after ``'  what does the region describe? region:'``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import OFAValueError
from ..images import Interpolation
from ..text import clean_caption
from .base import Task, register_task
from .results import RegionCaptionResult, Result

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer

# two leading spaces: the pretraining data has them (an extra lone "Ġ" token, id 1437)
REGION_PROMPT = "  what does the region describe? region:"
_BINS = "region_bins"  # the field predict adds: the region as bin tokens of this image's resize


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


@register_task
@dataclass
class RegionCaption(Task):
    name = "region_caption"
    aliases = ("grounded_caption", "grounded_captioning")
    required = ("region",)  # a box, checked by check_box
    image_size: int = 480
    interpolation: Interpolation = (
        Interpolation.BICUBIC
    )  # official OFA: torchvision Resize, PIL bicubic

    def check(self, fields: dict[str, Any]) -> None:
        check_box(fields.get("region"))

    def prompt(self, fields: dict[str, Any]) -> str:
        return f"{REGION_PROMPT} {fields[_BINS]}"

    def with_image(
        self, fields: dict[str, Any], info: ImageInfo, tokenizer: OFATokenizer
    ) -> dict[str, Any]:
        """The region quantised with this image's resize ratios (OFA-NOTES 2.2)."""
        bins = tokenizer.box_to_tokens(check_box(fields["region"]), *info.scale_factor)
        return {**fields, _BINS: bins}

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: dict[str, Any]
    ) -> Result:
        caption = clean_caption(tokenizer.decode(tokens, skip_special_tokens=True))
        return RegionCaptionResult(check_box(fields["region"]), caption)
