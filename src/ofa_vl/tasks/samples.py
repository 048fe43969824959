"""A labelled sample's whole life, as every task sees it: one :class:`Sample` from any reader
(COCO, RefCOCO, VQAv2, a folder), the training :class:`Example` a task makes of it
(:meth:`~ofa_vl.tasks.base.Task.examples`), and the folder columns a task reads it from
(:meth:`~ofa_vl.tasks.base.Task.from_columns`, with the checks below).

Training targets follow OFA's datasets (``OFA:data/mm_data/*_dataset.py``, OFA-NOTES 2.1-2.3):
captions cleaned and cut to 20 words, the most common of several answers, boxes as 4 bin tokens.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OFAValueError
from ..text import clean_caption

__all__ = [
    "MAX_CAPTION_WORDS",
    "Box",
    "ColumnError",
    "Example",
    "Sample",
    "caption_target",
    "column_box",
    "column_text",
    "column_texts",
    "given",
    "most_common_answer",
]

Box = tuple[float, float, float, float]  # XYXY pixels of the image as loaded
MAX_CAPTION_WORDS = 20  # OFA:run_scripts/caption/train_caption_stage1.sh --max-tgt-length 20


@dataclass(frozen=True)
class Sample:
    """One labelled input of a task, from any reader.

    ``fields`` are the task's query fields (texts as given: the task normalises them); ``truth``
    is what the answer should be, in the task's own type (captions, a box, the human answers, a
    label, a text; None: the split has no annotations). The rest says where it comes from.
    """

    id: int  # the stable key of its prediction (COCO image id, sent_id, question_id, line)
    image: Path
    fields: Mapping[str, Any] = field(default_factory=dict)
    truth: Any = None
    task: str = ""  # a folder line's task
    split: str = ""  # a folder line's split
    where: str = ""  # "DIR/metadata.jsonl:12"
    image_id: int | None = None  # COCO's, for COCO results (default: ``id``)
    category_id: int | None = None  # the referred object's COCO category (RefCOCO)


@dataclass(frozen=True)
class Example:
    """One training pair as text; boxes are XYXY pixels of the original image.

    ``region`` is appended to the prompt as 4 bin tokens; ``box`` makes the target 4 bin tokens
    (then ``target`` is unused); ``decoder_prompt`` is forced after ``<s>`` and carries no loss.
    """

    task: str
    image: Path
    prompt: str
    target: str = ""
    box: Box | None = None
    region: Box | None = None
    decoder_prompt: str | None = None


def caption_target(caption: str) -> str:
    """OFA caption target: lower case, punctuation stripped, at most 20 words, leading space."""
    # OFA:data/mm_data/caption_dataset.py (string.punctuation transtab, max_tgt_length)
    return " " + " ".join(clean_caption(caption).lower().split()[:MAX_CAPTION_WORDS])


def most_common_answer(answers: Sequence[str]) -> str:
    """The answer most of the human answers agree on (OFA: the max-confidence one)."""
    return Counter(answers).most_common(1)[0][0]


# --------------------------------------------------------------------------- folder columns
class ColumnError(OFAValueError):
    """One line of a folder dataset that cannot be used (the message says why)."""


def given(row: Mapping[str, Any], key: str) -> bool:
    """Whether the line has a value in column ``key``."""
    value = row.get(key)
    return value is not None and value != "" and value != []


def json_value(value: Any) -> Any:
    """A CSV cell holding a JSON list is decoded; anything else is returned as is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ColumnError(f"{value!r} is not a JSON list") from None
    return value


def column_text(row: Mapping[str, Any], key: str) -> str:
    """The non-empty text of column ``key``."""
    if key not in row or row[key] is None:
        raise ColumnError(f"missing column {key!r}")
    if not isinstance(row[key], (str, int, float)) or not str(row[key]).strip():
        raise ColumnError(f"empty {key!r}")
    return str(row[key]).strip()


def column_texts(row: Mapping[str, Any], one: str, many: str) -> tuple[str, ...]:
    """``one`` (a text) or ``many`` (a list of texts, JSON in a CSV)."""
    if given(row, many):
        values = json_value(row[many])
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            raise ColumnError(f"{many!r} must be a non-empty list of texts, got {values!r}")
        if not all(isinstance(v, (str, int, float)) and str(v).strip() for v in values):
            raise ColumnError(f"empty text in {many!r}")
        return tuple(str(v).strip() for v in values)
    if one not in row and many not in row:
        raise ColumnError(f"missing column {one!r} (or {many!r})")
    return (column_text(row, one if one in row else many),)


def column_box(row: Mapping[str, Any], size: tuple[int, int]) -> Box:
    """``box`` (XYXY) or ``bbox`` (COCO XYWH, as the column name says) inside the image."""
    key = "box" if given(row, "box") else "bbox"
    if not given(row, key):
        raise ColumnError("missing column 'box' (or 'bbox')")
    raw = json_value(row[key])
    try:
        a, b, c, d = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise ColumnError(f"{key} must be 4 numbers, got {row[key]!r}") from None
    x1, y1, x2, y2 = (a, b, a + c, b + d) if key == "bbox" else (a, b, c, d)  # COCO: XYWH
    w, h = size
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ColumnError(f"{key} {list(raw)} is not a box inside the {w}x{h} image")
    return (x1, y1, x2, y2)
