"""Object detection as OFA pretrains it (OFA:data/pretrain_data/unify_dataset.py
``process_detection``): ``' what are the objects in the image?'`` -> for each object 4 bin tokens
then its label words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..generation import GenerationConfig
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..tokenizer import bins_to_box
from .base import Task, TaskFields, register_task
from .results import BoxesResult, Result

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


def parse_boxes(
    tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo
) -> tuple[list[list[float]], list[str]]:
    """Read ``(<bin> x4, label words)*`` from generated ids: boxes in original pixels and labels.

    Special tokens are skipped; a run of fewer than 4 bins (a truncated box) is dropped, and text
    before the first box has no box to name.
    """
    lo, hi = tokenizer.bin_offset, tokenizer.bin_offset + tokenizer.num_bins
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    ids = [t for t in tokens if t not in special]
    boxes: list[list[float]] = []
    labels: list[str] = []
    i = 0
    while i < len(ids):
        window = ids[i : i + 4]
        if len(window) < 4 or not all(lo <= t < hi for t in window):
            i += 1
            continue
        end = i + 4
        while end < len(ids) and not lo <= ids[end] < hi:
            end += 1
        # bins -> pixels as OFA:utils/eval_utils.py eval_refcoco (bin / 999 * 512 / resize ratio)
        boxes.append(bins_to_box([t - lo for t in window], *info.scale_factor, tokenizer.num_bins))
        labels.append(tokenizer.decode(ids[i + 4 : end], skip_special_tokens=True).strip())
        i = end
    return boxes, labels


@register_task
@dataclass
class Detection(Task[TaskFields]):
    name = "detection"
    aliases = ("detect", "object_detection")
    # pretraining detection: LargeScaleJitter(output_size=256)
    defaults = PreprocessConfig(256, Interpolation.BICUBIC)
    result_type = BoxesResult
    generation: GenerationConfig = GenerationConfig(
        num_beams=5, max_new_tokens=200, no_repeat_ngram_size=0
    )

    def prompt(self, fields: TaskFields) -> str:
        return " what are the objects in the image?"

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: TaskFields
    ) -> Result:
        boxes, labels = parse_boxes(tokens, tokenizer, info)
        return BoxesResult(boxes, labels)
