"""Visual question answering (mmpretrain ``OFA`` task ``vqa``; OFA:data/mm_data/vqa_gen_dataset.py).

The prompt is ``" {question}"``; with VinVL object tags it becomes ``" {question} object: {tags}"``
and the decoder is forced to start with it (mmpretrain ``OFAAddObjects``). An answer list
(``ans2label``) constrains decoding with a trie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..generation import Trie
from ..text import TextNorm
from .base import Task, register_task


@register_task
@dataclass
class VQA(Task):
    name = "vqa"
    required = ("question",)
    optional = ("objects",)
    image_size: int = 480
    interpolation: str = "bicubic"
    generation: dict[str, Any] = field(
        default_factory=lambda: {
            "num_beams": 5,
            "max_new_tokens": 200,
            "no_repeat_ngram_size": 3,
            "length_penalty": 0.0,
        }
    )
    # mmpretrain's fine-tuned VQA: the question verbatim; zero-shot cards: CLEAN; official: PRE_QUESTION
    text_norm: dict[str, TextNorm] = field(default_factory=dict)
    answers: Sequence[str] | None = None  # ans2label: constrain answers to this list
    _trie: Trie | None = field(default=None, init=False, repr=False)

    def _question(self, fields: dict[str, Any]) -> str:
        """The (normalised) question, with VinVL object tags as mmpretrain's ``OFAAddObjects``."""
        objects = fields.get("objects")
        q = fields["question"]
        return f"{q} object: {' '.join(objects)}" if objects else q

    def prompt(self, fields: dict[str, Any]) -> str:
        return " " + self._question(fields)

    def decoder_prompt(self, fields: dict[str, Any]) -> str | None:
        return " " + self._question(fields) if fields.get("objects") else None

    def constraint_trie(self, tokenizer):  # type: ignore[no-untyped-def]
        if self.answers is None:
            return None
        if self._trie is None:  # answers as mmpretrain inserts them: [<s>] + " answer" + [</s>]
            self._trie = Trie(
                [tokenizer.encode(" " + a) for a in self.answers], tokenizer.eos_token_id
            )
        return self._trie

    def parse(self, tokens, tokenizer, info, fields):  # type: ignore[no-untyped-def]
        answer = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        # mmpretrain's inferencer echoes the question as the model read it
        return {"question": self._question(fields), "pred_answer": answer}
