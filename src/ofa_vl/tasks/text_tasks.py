"""Text-only tasks: summarization (Gigaword), text infilling and the GLUE prompts.

The encoder reads the instruction alone: image rows are masked out (``images_mask=False``, as OFA's
pure-text samples set ``patch_mask``), so any placeholder image given to the pipeline is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from ..generation import GenerationConfig
from ..preprocess import PreprocessConfig
from ..text import pre_caption
from .base import Task, TaskFields, TextFields, register_task
from .results import GlueResult, Result, TextResult
from .scored import PromptType, ScoringTask

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


@dataclass
class TextGeneration(Task[TextFields]):
    """Text in, text out: the image rows are masked out, the answer is the decoded text."""

    Fields = TextFields
    text_only = True
    defaults = PreprocessConfig(64)  # the placeholder image is masked out; a cheap ResNet pass
    result_type = TextResult

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: TextFields
    ) -> Result:
        return TextResult(tokenizer.decode(tokens, skip_special_tokens=True).strip())


@register_task
@dataclass
class Summarize(TextGeneration):
    name = "gigaword"
    aliases = ("summarize", "summarization")
    # OFA:run_scripts/gigaword/evaluate_gigaword.sh: beam 6, lenpen 0.7, max-len-b 32, no-repeat 3
    generation: GenerationConfig = GenerationConfig(
        num_beams=6,
        length_penalty=0.7,
        max_new_tokens=33,  # --max-len-b=32: 32 tokens, then </s>
        no_repeat_ngram_size=3,
        fairseq=True,
    )

    def prompt(self, fields: TextFields) -> str:
        # OFA:data/nlg_data/summary_dataset.py: pre_caption(source, 512), <unk> -> unk
        source = pre_caption(fields.text, 512).replace("<unk>", "unk")
        return f' what is the summary of article " {source} "?'


@register_task
@dataclass
class TextInfill(TextGeneration):
    name = "text_infill"
    aliases = ("infill_text",)  # the text has <mask> where words are missing
    generation: GenerationConfig = GenerationConfig(
        num_beams=5, max_new_tokens=128, no_repeat_ngram_size=0
    )

    def prompt(self, fields: TextFields) -> str:
        # OFA:data/pretrain_data/unify_dataset.py process_pure_text: lower-cased text between the quotes
        return f' what is the complete text of " {fields.text.strip().lower()} "?'


@dataclass(frozen=True)
class TextPairFields(TaskFields):
    text: str
    text2: str


@dataclass(frozen=True)
class TextQuestionFields(TaskFields):
    text: str
    question: str


@dataclass
class Glue(ScoringTask[TaskFields]):
    """A GLUE task: its prompt, scored over its answer words (``OFA:data/nlu_data/*``)."""

    text_only = True
    template: ClassVar[str] = ""
    answers: ClassVar[tuple[str, ...]] = ("yes", "no")
    defaults = PreprocessConfig(64)
    result_type = GlueResult
    # OFA-NOTES 2.3: prompt_type=src; the prediction is the trie-masked argmax after </s>, which
    # equals the best candidate score (a single-token answer, then </s> is the only trie child)
    prompt_type: PromptType = "src"

    def prompt(self, fields: TaskFields) -> str:
        # OFA:data/nlu_data/*_dataset.py: ' '.join(text.lower().strip().split()[:max_src_length])
        texts = [" ".join(str(t).lower().split()[:512]) for t in astuple(fields)]
        return self.template.format(*texts)

    def candidates(self) -> Sequence[str]:
        return self.answers

    def report(self, scores: torch.Tensor, names: Sequence[str], fields: TaskFields) -> Result:
        return GlueResult(names[int(scores.argmax())], {n: float(s) for n, s in zip(names, scores)})


# name -> (template, query fields in template order, answer words); OFA-NOTES 2.3 GLUE row
GLUE_TASKS: dict[str, tuple[str, type[TaskFields], tuple[str, ...]]] = {
    "cola": (' is the text " {} " grammatically correct?', TextFields, ("yes", "no")),
    "mnli": (' can text1 " {} " imply text2 " {} "?', TextPairFields, ("maybe", "yes", "no")),
    "rte": (' can text1 " {} " imply text2 " {} "?', TextPairFields, ("yes", "no")),
    "mrpc": (
        ' does text1 " {} " and text2 " {} " have the same semantics?',
        TextPairFields,
        ("yes", "no"),
    ),
    "qnli": (
        ' does " {} " contain the answer to question " {} "?',
        TextQuestionFields,
        ("yes", "no"),
    ),
    "qqp": (' is question " {} " and question " {} " equivalent?', TextPairFields, ("yes", "no")),
    "sst2": (
        ' is the sentiment of text " {} " positive or negative?',
        TextFields,
        ("positive", "negative"),
    ),
}

for _name, (_template, _fields, _answers) in GLUE_TASKS.items():
    register_task(
        type(
            f"Glue_{_name}",
            (Glue,),
            {"name": _name, "Fields": _fields, "template": _template, "answers": _answers},
        )
    )
