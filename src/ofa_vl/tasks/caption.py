"""Image captioning (mmpretrain ``OFA`` task ``caption``; OFA:data/mm_data/caption_dataset.py).

English and Chinese (OFA-CN, MUGE) prompts; a Chinese caption comes without the spaces the word
pieces leave between characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..text import clean_caption
from ..tokenizer import join_cjk
from .base import BilingualTask, TaskFields, register_task
from .results import CaptionResult, Result
from .samples import Example, Sample, caption_target, column_texts

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..shapes.scene import Scene
    from ..shapes.text import SceneText
    from ..tokenizer import OFATokenizer


@register_task
@dataclass
class Caption(BilingualTask[TaskFields]):
    name = "caption"
    result_type = CaptionResult
    metric = "caption"
    coco_results = True
    folder_columns = ("caption|captions",)  # one reference caption, or a list of them
    # 480 px, bilinear; decoding: the base default, mmpretrain OFA's (beam 5, 20 tokens, no-repeat 3)

    def prompt(self, fields: TaskFields) -> str:
        # OFA:data/mm_data/caption_dataset.py, GPT2BPE / BertBPE
        return "图片描述了什么内容?" if self.language == "zh" else " what does the image describe?"

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: TaskFields
    ) -> Result:
        # OFA:utils/eval_utils.py eval_caption also strips string.punctuation from Chinese ones
        caption = clean_caption(tokenizer.decode(tokens, skip_special_tokens=True))
        return CaptionResult(join_cjk(caption) if self.language == "zh" else caption)

    def shapes_lines(self, scene: Scene, text: SceneText, name: str) -> list[dict[str, Any]]:
        return [{"file_name": name, "captions": text.captions}]

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        return {}, column_texts(row, "caption", "captions")

    def examples(self, sample: Sample) -> list[Example]:
        """``" what does the image describe?"`` -> ``" {caption}"``, one example per caption."""
        prompt = self.prompt(self.normalize(sample.fields))
        return [Example(self.name, sample.image, prompt, caption_target(c)) for c in sample.truth]
