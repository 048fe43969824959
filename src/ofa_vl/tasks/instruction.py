"""A free instruction (``ask``): any prompt, the generated text as the answer, optionally read as
boxes (``<bin>`` x4 then label words, as OFA writes regions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import Task, register_task
from .detection import parse_boxes


@register_task
@dataclass
class Ask(Task):
    name = "ask"
    aliases = ("instruction",)
    required = ("prompt",)
    optional = ("boxes",)
    image_size: int = 480
    interpolation: str = "bicubic"  # official OFA: torchvision Resize, PIL bicubic
    generation: dict[str, Any] = field(
        default_factory=lambda: {"num_beams": 5, "max_new_tokens": 64, "no_repeat_ngram_size": 3}
    )

    def prompt(self, fields: dict[str, Any]) -> str:
        text: str = fields["prompt"].rstrip()
        # OFA-NOTES 2.1: instructions start with a space (GPT-2 "Ġ" tokens); extra ones are kept
        return text if text.startswith(" ") else " " + text

    def parse(self, tokens, tokenizer, info, fields):  # type: ignore[no-untyped-def]
        out: dict[str, Any] = {
            "prompt": fields["prompt"],
            "text": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
        }
        if fields.get("boxes"):  # the query asks to read the answer as regions
            out["pred_bboxes"], out["pred_labels"] = parse_boxes(tokens, tokenizer, info)
        return out
