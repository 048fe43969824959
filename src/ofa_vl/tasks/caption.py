"""Image captioning (mmpretrain ``OFA`` task ``caption``; OFA:data/mm_data/caption_dataset.py).

English and Chinese (OFA-CN, MUGE) prompts; a Chinese caption comes without the spaces the word
pieces leave between characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..text import clean_caption
from ..tokenizer import join_cjk
from .base import BilingualTask, register_task


@register_task
@dataclass
class Caption(BilingualTask):
    name = "caption"
    image_size: int = 480
    interpolation: str = "bilinear"
    # mmpretrain OFA defaults: beam 5, 20 new tokens, no-repeat 3
    generation: dict[str, Any] = field(
        default_factory=lambda: {"num_beams": 5, "max_new_tokens": 20, "no_repeat_ngram_size": 3}
    )

    def prompt(self, fields: dict[str, Any]) -> str:
        # OFA:data/mm_data/caption_dataset.py, GPT2BPE / BertBPE
        return "图片描述了什么内容?" if self.language == "zh" else " what does the image describe?"

    def parse(self, tokens, tokenizer, info, fields):  # type: ignore[no-untyped-def]
        # OFA:utils/eval_utils.py eval_caption also strips string.punctuation from Chinese ones
        caption = clean_caption(tokenizer.decode(tokens, skip_special_tokens=True))
        return {"pred_caption": join_cjk(caption) if self.language == "zh" else caption}
