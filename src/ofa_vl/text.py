"""Text normalisation applied to a task's text fields before the prompt is built.

Which one a model takes is part of its input pipeline (``Task.text_norm``, overlaid by the model
card and a model folder's ``pipeline.json``): mmpretrain's zero-shot VQA configs run
``CleanCaption`` on the question, its fine-tuned configs pass text verbatim, and the official OFA
code runs ``pre_question`` / ``pre_caption`` (``docs/pipelines.md`` lists them model by model).
"""

from __future__ import annotations

import re
import string
from enum import Enum

from .errors import OFAValueError

__all__ = [
    "TextNorm",
    "clean_caption",
    "clean_text",
    "normalize_text",
    "pre_caption",
    "pre_question",
]

_NO_PUNCT = str.maketrans("", "", string.punctuation)


class TextNorm(str, Enum):
    """How one text field is normalised."""

    NONE = "none"  # verbatim (mmpretrain's fine-tuned caption / refcoco / VQA test pipelines)
    CLEAN = "clean"  # mmpretrain CleanCaption(): strip, drop punctuation, fold spaces, lowercase
    PRE_QUESTION = "pre_question"  # OFA:data/ofa_dataset.py pre_question
    PRE_CAPTION = "pre_caption"  # OFA:data/ofa_dataset.py pre_caption

    @classmethod
    def parse(cls, value: TextNorm | str) -> TextNorm:
        """A member from itself or its name; one clear error for anything else."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise OFAValueError(
                f"unknown text normalisation {value!r}; use one of {names}"
            ) from None


def clean_text(text: str, lowercase: bool = True) -> str:
    """mmpretrain ``CleanCaption._clean``: strip, delete ``string.punctuation``, fold whitespace
    runs to one space, then lowercase (MMP:datasets/transforms/processing.py)."""
    text = re.sub(r"\s{2,}", " ", text.strip().translate(_NO_PUNCT))
    return text.lower() if lowercase else text


def clean_caption(text: str) -> str:
    """mmpretrain ``OFA.post_process`` on captions: ``CleanCaption(lowercase=False)``."""
    return clean_text(text, lowercase=False)


def pre_question(question: str, max_words: int = 128) -> str:
    """The official OFA question normalisation (OFA:data/ofa_dataset.py ``pre_question``)."""
    q = question.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ")
    q = re.sub(r"\s{2,}", " ", q).rstrip("\n").strip(" ")
    q = " ".join(q.split(" ")[:max_words])
    return q if q.endswith("?") else q + "?"


def pre_caption(caption: str, max_words: int = 80) -> str:
    """The official caption normalisation (OFA:data/ofa_dataset.py ``pre_caption``)."""
    text = caption.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ")
    text = re.sub(r"\s{2,}", " ", text.replace("<person>", "person")).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def normalize_text(text: str, how: TextNorm | str) -> str:
    """``text`` normalised as ``how`` says."""
    how = TextNorm.parse(how)
    if how is TextNorm.CLEAN:
        return clean_text(text)
    if how is TextNorm.PRE_QUESTION:
        return pre_question(text)
    if how is TextNorm.PRE_CAPTION:
        return pre_caption(text)
    return text
