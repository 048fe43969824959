"""Optical character recognition (OFA-CN's OCR, OFA:data/mm_data/ocr_dataset.py): the text in the
image. The image keeps its aspect ratio, edge-padded to a square (``images.ocr_resize``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..generation import GenerationConfig
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..tokenizer import join_cjk
from .base import BilingualTask, TaskFields, register_task
from .results import Result, TextResult

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


@register_task
@dataclass
class OCR(BilingualTask[TaskFields]):
    name = "ocr"
    aliases = ("text_recognition",)
    # OFA:tasks/ofa_task.py patch_image_size, ModelScope's OFA OCR configs: 480; ocr_resize
    # ("ocr_document" for document lines)
    defaults = PreprocessConfig(480, Interpolation.OCR)
    result_type = TextResult
    document: bool = False  # OFA:tasks/mm_tasks/ocr.py --is-document: a line folded into 4 rows
    # OFA:run_scripts/ocr/evaluate_ocr.sh: beam 5, max_len_b 64 (64 tokens, then </s>), no-repeat 0
    generation: GenerationConfig = GenerationConfig(
        num_beams=5, fairseq=True, max_new_tokens=65, no_repeat_ngram_size=0
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.document:
            self.interpolation = Interpolation.OCR_DOCUMENT

    def prompt(self, fields: TaskFields) -> str:
        # OFA:data/mm_data/ocr_dataset.py, GPT2BPE / BertBPE
        return (
            "图片上的文字是什么?" if self.language == "zh" else " what are the texts on the image?"
        )

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: TaskFields
    ) -> Result:
        text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        # OFA:tasks/mm_tasks/ocr.py scores hypotheses with every space removed; here only the
        # spaces between CJK characters go, so Latin words stay apart
        return TextResult(join_cjk(text))
