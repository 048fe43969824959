"""Visual question answering (mmpretrain ``OFA`` task ``vqa``; OFA:data/mm_data/vqa_gen_dataset.py).

The prompt is ``" {question}"``; with VinVL object tags it becomes ``" {question} object: {tags}"``
and the decoder is forced to start with it (mmpretrain ``OFAAddObjects``). An answer list
(``ans2label``) constrains decoding with a trie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..generation import GenerationConfig, Trie
from ..images import Interpolation
from ..text import TextNorm
from .base import Task, TaskFields, register_task
from .results import Result, VQAResult

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


@dataclass(frozen=True)
class VQAFields(TaskFields):
    question: str
    objects: Sequence[str] | None = None  # VinVL object tags


def vqa_question(fields: VQAFields) -> str:
    """The (normalised) question, with VinVL object tags as mmpretrain's ``OFAAddObjects``."""
    q, objects = fields.question, fields.objects
    return f"{q} object: {' '.join(objects)}" if objects else q


@register_task
@dataclass
class VQA(Task[VQAFields]):
    name = "vqa"
    Fields = VQAFields
    image_size: int = 480
    interpolation: Interpolation = Interpolation.BICUBIC
    generation: GenerationConfig = GenerationConfig(
        num_beams=5, max_new_tokens=200, no_repeat_ngram_size=3, length_penalty=0.0
    )
    # mmpretrain's fine-tuned VQA: the question verbatim; zero-shot cards: CLEAN; official: PRE_QUESTION
    text_norm: dict[str, TextNorm] = field(default_factory=dict)
    answers: Sequence[str] | None = None  # ans2label: constrain answers to this list

    def prompt(self, fields: VQAFields) -> str:
        return " " + vqa_question(fields)

    def decoder_prompt(self, fields: VQAFields) -> str | None:
        return " " + vqa_question(fields) if fields.objects else None

    def constraint_trie(self, tokenizer: OFATokenizer) -> Trie | None:
        if self.answers is None:
            return None
        # answers as mmpretrain inserts them: [<s>] + " answer" + [</s>]
        return Trie([tokenizer.encode(" " + a) for a in self.answers], tokenizer.eos_token_id)

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: VQAFields
    ) -> Result:
        answer = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        # mmpretrain's inferencer echoes the question as the model read it
        return VQAResult(vqa_question(fields), answer)

    def confidence(self, logprobs: Sequence[float]) -> float:
        """The answer's probability, ``exp`` of its summed log-prob: with an answer list, its
        probability among the listed answers (the trie renormalises each step)."""
        return math.exp(sum(logprobs))
