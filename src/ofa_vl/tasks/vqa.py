"""Visual question answering (mmpretrain ``OFA`` task ``vqa``; OFA:data/mm_data/vqa_gen_dataset.py).

The prompt is ``" {question}"``; with VinVL object tags it becomes ``" {question} object: {tags}"``
and the decoder is forced to start with it (mmpretrain ``OFAAddObjects``). An answer list
(``ans2label``) constrains decoding with a trie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..generation import GenerationConfig, Trie
from ..images import Interpolation
from ..preprocess import PreprocessConfig
from ..text import TextNorm
from .base import Task, TaskFields, register_task
from .results import Result, VQAResult
from .samples import Example, Sample, column_text, column_texts, most_common_answer

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..shapes.scene import Scene
    from ..shapes.text import SceneText
    from ..tokenizer import OFATokenizer


@dataclass(frozen=True)
class VQAFields(TaskFields):
    question: str
    objects: Sequence[str] | None = None  # VinVL object tags


@dataclass(frozen=True)
class VQAAnswers:
    """A question's truth: its human answers (VQAv2: 10) and VQAv2's answer type."""

    answers: tuple[str, ...]
    answer_type: str | None = None  # "yes/no", "number", "other"; None for a folder's


def vqa_question(fields: VQAFields) -> str:
    """The (normalised) question, with VinVL object tags as mmpretrain's ``OFAAddObjects``."""
    q, objects = fields.question, fields.objects
    return f"{q} object: {' '.join(objects)}" if objects else q


@register_task
@dataclass
class VQA(Task[VQAFields]):
    name = "vqa"
    Fields = VQAFields
    defaults = PreprocessConfig(480, Interpolation.BICUBIC)
    result_type = VQAResult
    metric = "vqa"
    folder_columns = ("question", "answer|answers")  # one answer, or the human answers
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

    def answer(self, result: Result) -> str:
        assert isinstance(result, VQAResult)
        return result.answer

    def confidence(self, logprobs: Sequence[float]) -> float:
        """The answer's probability, ``exp`` of its summed log-prob: with an answer list, its
        probability among the listed answers (the trie renormalises each step)."""
        return math.exp(sum(logprobs))

    def shapes_lines(self, scene: Scene, text: SceneText, name: str) -> list[dict[str, Any]]:
        return [{"file_name": name, "question": q.question, "answer": q.answer}
                for q in text.questions]  # fmt: skip

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        question = column_text(row, "question")
        return {"question": question}, VQAAnswers(column_texts(row, "answer", "answers"))

    def examples(self, sample: Sample) -> list[Example]:
        """``" {question}"`` -> ``" {answer}"``, the most frequent of the human answers (none
        for a question without answers)."""
        if sample.truth is None or not sample.truth.answers:
            return []
        fields = self.normalize(sample.fields)
        answer = " " + most_common_answer(sample.truth.answers)
        dprompt = self.decoder_prompt(fields)
        return [
            Example(self.name, sample.image, self.prompt(fields), answer, decoder_prompt=dprompt)
        ]
