"""Image captioning (mmpretrain ``OFA`` task ``caption``; OFA:data/mm_data/caption_dataset.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..text import clean_caption
from .base import Task, register_task


@register_task
@dataclass
class Caption(Task):
    name = "caption"
    image_size: int = 480
    interpolation: str = "bilinear"
    # mmpretrain OFA defaults: beam 5, 20 new tokens, no-repeat 3
    generation: dict[str, Any] = field(
        default_factory=lambda: {"num_beams": 5, "max_new_tokens": 20, "no_repeat_ngram_size": 3}
    )

    def prompt(self, fields: dict[str, Any]) -> str:
        return " what does the image describe?"  # OFA:data/mm_data/caption_dataset.py

    def parse(self, tokens, tokenizer, info, fields):  # type: ignore[no-untyped-def]
        return {"pred_caption": clean_caption(tokenizer.decode(tokens, skip_special_tokens=True))}
