"""What a task answers: one typed result per input.

Every result carries the model's own ``score``: for generated answers the decoder's score of the
chosen sequence (:attr:`~ofa_vl.generation.GenerateOutput.scores`: its summed log-probability, or
with beam search and ``length_penalty`` != 0 that sum over ``length ** length_penalty``, the number
HF / fairseq rank beams by); for scored tasks the best candidate's summed log-probability, and
``candidates`` holds every candidate's. Beside it, ``confidence`` is a number in [0, 1] a user
can threshold (the task's definition: :meth:`ofa_vl.tasks.base.Task.confidence`, the README's
table); ``token_logprobs`` (with ``output_scores=True``) each generated token's log-probability;
``n_best`` (with ``num_return_sequences`` n > 1) the n best beams as results of the same type,
best first, the first equal to this one. :meth:`Result.to_dict` gives mmpretrain's result dict
exactly as before (the goldens compare those), so the score is not in it unless that dict already
had one; :meth:`Result.extras` holds what was asked for beyond it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

__all__ = [
    "AskResult",
    "BoxesResult",
    "CaptionResult",
    "ClassifyResult",
    "CodesResult",
    "EntailmentResult",
    "GlueResult",
    "GroundingResult",
    "MatchResult",
    "RegionCaptionResult",
    "Result",
    "TextResult",
    "TokenLogprob",
    "VQAResult",
]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and its log-probability (after the task's constraints)."""

    id: int
    token: str  # the vocabulary entry (BPE piece, word, <bin_i>, </s>)
    logprob: float


@dataclass
class Result:
    """One input's answer."""

    score: float | None = field(default=None, kw_only=True)  # the model's own, see the module
    confidence: float | None = field(default=None, kw_only=True)  # in [0, 1], see the module
    candidates: dict[str, float] = field(default_factory=dict, kw_only=True)  # scored tasks
    token_logprobs: list[TokenLogprob] | None = field(default=None, kw_only=True)
    n_best: list[Result] = field(default_factory=list, kw_only=True)  # best first
    KEYS: ClassVar[Mapping[str, str]] = {}  # field -> its key in to_dict, where they differ

    def to_dict(self) -> dict[str, Any]:
        """The mmpretrain-style result dict."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Result:
        """The result a :meth:`to_dict` (or :meth:`as_dict`, a ``predictions.jsonl`` line) holds;
        ``token_logprobs`` and ``n_best`` are not read back."""
        skip = {"token_logprobs", "n_best"}
        names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in skip]
        given = {n: record[cls.KEYS.get(n, n)] for n in names if cls.KEYS.get(n, n) in record}
        return cls(**given)

    def extras(self) -> dict[str, Any]:
        """What was asked for beyond :meth:`to_dict`: ``token_logprobs``, ``n_best`` (each entry
        an :meth:`as_dict`), JSON-ready; empty by default."""
        out: dict[str, Any] = {}
        if self.token_logprobs is not None:
            out["token_logprobs"] = [dataclasses.asdict(t) for t in self.token_logprobs]
        if self.n_best:
            out["n_best"] = [r.as_dict() for r in self.n_best]
        return out

    def as_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with the ``score``, the ``confidence`` and the :meth:`extras` (what
        the CLI's ``--json`` prints)."""
        return {
            **self.to_dict(),
            "score": self.score,
            "confidence": self.confidence,
            **self.extras(),
        }


@dataclass
class CaptionResult(Result):
    caption: str
    KEYS = {"caption": "pred_caption"}

    def to_dict(self) -> dict[str, Any]:
        return {"pred_caption": self.caption}


@dataclass
class RegionCaptionResult(Result):
    region: list[float]
    caption: str
    KEYS = {"caption": "pred_caption"}

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "pred_caption": self.caption}


@dataclass
class GroundingResult(Result):
    text: str
    boxes: list[list[float]]  # one box, or none when the model did not answer a box
    KEYS = {"boxes": "pred_bboxes"}

    def to_dict(self) -> dict[str, Any]:
        return {"pred_bboxes": self.boxes, "text": self.text}


@dataclass
class BoxesResult(Result):
    """Detection: every box and its label words."""

    boxes: list[list[float]]
    labels: list[str]
    KEYS = {"boxes": "pred_bboxes", "labels": "pred_labels"}

    def to_dict(self) -> dict[str, Any]:
        return {"pred_bboxes": self.boxes, "pred_labels": self.labels}


@dataclass
class VQAResult(Result):
    question: str  # as the model read it (mmpretrain echoes it)
    answer: str
    with_score: bool = False  # all-candidate VQA reports the best score in its dict
    KEYS = {"answer": "pred_answer"}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"question": self.question, "pred_answer": self.answer}
        if self.with_score:
            out["score"] = self.score
        return out


@dataclass
class TextResult(Result):
    """OCR, summarization, text infilling: one text."""

    text: str
    KEYS = {"text": "pred_text"}

    def to_dict(self) -> dict[str, Any]:
        return {"pred_text": self.text}


@dataclass
class AskResult(Result):
    prompt: str
    text: str
    boxes: list[list[float]] | None = None  # when the query asked to read regions
    labels: list[str] | None = None
    KEYS = {"boxes": "pred_bboxes", "labels": "pred_labels"}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "text": self.text}
        if self.boxes is not None:
            out["pred_bboxes"], out["pred_labels"] = self.boxes, self.labels
        return out


@dataclass
class ClassifyResult(Result):
    label: str
    label_score: float
    topk: list[dict[str, Any]]  # {"label", "score"}, best first
    KEYS = {"label": "pred_label", "label_score": "pred_score"}

    def to_dict(self) -> dict[str, Any]:
        return {"pred_label": self.label, "pred_score": self.label_score, "topk": self.topk}


@dataclass
class MatchResult(Result):
    text: str
    match: bool
    probability: float  # p(yes) / (p(yes) + p(no))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "match": self.match, "probability": self.probability}


@dataclass
class EntailmentResult(Result):
    hypothesis: str
    answer: str  # yes / no / maybe
    label: str  # entailment / contradiction / neutral
    scores: dict[str, float]  # label -> log-probability
    KEYS = {"answer": "pred_answer", "label": "pred_label"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "hypothesis": self.hypothesis,
            "pred_answer": self.answer,
            "pred_label": self.label,
            "scores": self.scores,
        }


@dataclass
class GlueResult(Result):
    answer: str
    scores: dict[str, float]  # answer word -> log-probability
    KEYS = {"answer": "pred_answer"}

    def to_dict(self) -> dict[str, Any]:
        return {"pred_answer": self.answer, "scores": self.scores}


@dataclass
class CodesResult(Result):
    codes: list[list[int]]  # (rows, side) image codes
    image: Image.Image | None = None  # decoded by the VQGAN, when one is given

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"codes": self.codes}
        if self.image is not None:
            out["image"] = self.image
        return out
