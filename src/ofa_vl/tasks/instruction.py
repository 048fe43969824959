"""A free instruction (``ask``): any prompt, the generated text as the answer, optionally read as
boxes (``<bin>`` x4 then label words, as OFA writes regions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..generation import GenerationConfig
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from .base import Task, TaskFields, register_task
from .detection import parse_boxes
from .results import AskResult, Result
from .samples import column_text

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


@dataclass(frozen=True)
class AskFields(TaskFields):
    prompt: str  # the instruction
    boxes: bool = False  # also read the answer as regions


@register_task
@dataclass
class Ask(Task[AskFields]):
    name = "ask"
    aliases = ("instruction",)
    Fields = AskFields
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)  # official OFA: PIL bicubic Resize
    result_type = AskResult
    metric = "exact"
    folder_columns = ("prompt", "target")  # any instruction and its answer
    generation: GenerationConfig = GenerationConfig(
        num_beams=5, max_new_tokens=64, no_repeat_ngram_size=3
    )

    def prompt(self, fields: AskFields) -> str:
        text = fields.prompt.rstrip()
        # OFA-NOTES 2.1: instructions start with a space (GPT-2 "Ġ" tokens); extra ones are kept
        return text if text.startswith(" ") else " " + text

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: AskFields
    ) -> Result:
        out = AskResult(fields.prompt, tokenizer.decode(tokens, skip_special_tokens=True).strip())
        if fields.boxes:  # the query asks to read the answer as regions
            out.boxes, out.labels = parse_boxes(tokens, tokenizer, info)
        return out

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        return {"prompt": column_text(row, "prompt")}, column_text(row, "target")

    def answer(self, result: Result) -> str:
        assert isinstance(result, AskResult)
        return result.text
