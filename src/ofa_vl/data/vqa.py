"""VQAv2 in the layout of mmpretrain's ``COCOVQA`` configs, plus OFA's optional inputs:

    <data_root>/annotations/v2_OpenEnded_mscoco_{split}_questions.json  {"questions": [...]}
    <data_root>/annotations/v2_mscoco_{split}_annotations.json          {"annotations": [...]}
                                                                        (absent for test splits)
    <data_root>/{image_dir}/COCO_{image_dir}_{image_id:012d}.jpg         image_dir: val2014, ...;
                                                                        test2015 for test-dev2015

Object tags (OFA ``--add-object``, VinVL detector labels) are read from either
  * ``*.json``: ``{"<image_id>": ["man", "shirt", ...], ...}``, or
  * ``*.tsv``: one line per image, ``<image_id>\\t<tag>&&<tag>&&...`` (OFA's ``&&`` joining),
with the tags of an image in the detector's order (OFA uses the first 30).

The answer vocabulary (``trainval_ans2label.pkl``, 3,129 answers) is a pickled or JSON dict
answer -> label, or a JSON list of answers (label = position).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_vl.data.common import (
    DatasetError,
    ImageCheck,
    ImageDataset,
    load_json,
    load_pickle,
    require_file,
    require_keys,
)
from ofa_vl.tasks.samples import Sample
from ofa_vl.tasks.vqa import VQAAnswers

# VQAv2: test-dev2015 questions are about test2015 images
_IMAGE_DIRS: dict[str, str] = {"test-dev2015": "test2015"}
_TAGS_LAYOUT = '{"<image_id>": [tag, ...]} (.json) or "<image_id>\\t<tag>&&<tag>..." lines (.tsv)'
_VOCAB_LAYOUT = "a dict answer -> label (.pkl or .json) or a JSON list of answers"


@dataclass(frozen=True, slots=True)
class VQASample:
    """One VQAv2 question; ``answers`` (the 10 human answers) is None for the test splits."""

    question_id: int
    image_id: int
    image_path: Path
    question: str
    answers: list[str] | None
    answer_type: str | None
    objects: list[str] | None

    def sample(self) -> Sample:
        """As every task sees it: question and tags as the query, the answers as truth."""
        truth = None if self.answers is None else VQAAnswers(tuple(self.answers), self.answer_type)
        fields = {"question": self.question, "objects": self.objects}
        return Sample(self.question_id, self.image_path, fields, truth, image_id=self.image_id)


def load_object_tags(path: str | Path) -> dict[int, list[str]]:
    """Read per-image object tags from a ``.json`` or ``.tsv`` file (formats: module docstring)."""
    path = Path(path)
    if path.suffix == ".json":
        raw = load_json(path, dict, _TAGS_LAYOUT)
        items: list[tuple[str, Any]] = list(raw.items())
    elif path.suffix == ".tsv":
        require_file(path, _TAGS_LAYOUT)
        with path.open(encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        if any(len(r) != 2 for r in rows):
            raise DatasetError(
                f"{path}: expected two tab-separated columns per line, {_TAGS_LAYOUT}"
            )
        items = [(image_id, [t for t in tags.split("&&") if t]) for image_id, tags in rows]
    else:
        raise DatasetError(f"{path}: unknown object tags format, expected {_TAGS_LAYOUT}")
    tags: dict[int, list[str]] = {}
    for key, value in items:
        if not (key.strip().isdigit() and isinstance(value, list)):
            raise DatasetError(f"{path}: bad entry {key!r}: {value!r}, expected {_TAGS_LAYOUT}")
        tags[int(key)] = [str(t) for t in value]
    return tags


def load_answer_vocab(path: str | Path) -> dict[str, int]:
    """Read an answer vocabulary (``ans2label``): ``.pkl`` or ``.json`` (formats: module doc)."""
    path = Path(path)
    if path.suffix == ".json":
        vocab: Any = load_json(path, (dict, list), _VOCAB_LAYOUT)
    else:
        vocab = load_pickle(path, _VOCAB_LAYOUT)
    if isinstance(vocab, list):
        vocab = {answer: label for label, answer in enumerate(vocab)}
    if not (
        isinstance(vocab, dict)
        and all(isinstance(a, str) and isinstance(i, int) for a, i in vocab.items())
    ):
        raise DatasetError(f"{path}: expected {_VOCAB_LAYOUT}")
    return vocab


def _records(path: Path, key: str, fields: tuple[str, ...]) -> list[Mapping[str, Any]]:
    data = load_json(path, dict, f'the VQAv2 {{"{key}": [...]}} file')
    records = data.get(key)
    if not isinstance(records, list):
        raise DatasetError(f'{path}: no "{key}" list, expected the VQAv2 {{"{key}": [...]}} file')
    return [require_keys(r, fields, path, f"{key}[{i}]") for i, r in enumerate(records)]


class VQAv2(ImageDataset[VQASample]):
    """VQAv2 questions of one split, with their human answers where the split has them.

    Args:
        data_root: folder holding ``annotations/`` and the image folders (mmpretrain: data/coco).
        split: ``train2014``, ``val2014``, ``test-dev2015`` or ``test2015``; splits starting with
            ``test`` have no annotation file.
        object_tags: optional VinVL object tags file (module docstring) -> ``sample.objects``.
        answer_vocab: optional ``ans2label`` file -> :attr:`ans2label`.
        check_images: ``"eager"`` (all images checked now) or ``"lazy"`` (on access).
    """

    def __init__(
        self,
        data_root: str | Path,
        split: str = "val2014",
        object_tags: str | Path | None = None,
        answer_vocab: str | Path | None = None,
        check_images: ImageCheck = "eager",
    ) -> None:
        root = Path(data_root)
        q_file = root / "annotations" / f"v2_OpenEnded_mscoco_{split}_questions.json"
        questions = _records(q_file, "questions", ("question_id", "image_id", "question"))
        annotations: dict[Any, Mapping[str, Any]] = {}
        a_file = root / "annotations" / f"v2_mscoco_{split}_annotations.json"
        has_answers = not split.startswith("test")
        if has_answers:
            fields = ("question_id", "answers", "answer_type")
            annotations = {a["question_id"]: a for a in _records(a_file, "annotations", fields)}
        tags = load_object_tags(object_tags) if object_tags is not None else None
        self.ans2label = load_answer_vocab(answer_vocab) if answer_vocab is not None else None

        image_dir = _IMAGE_DIRS.get(split, split)
        samples = []
        for q in questions:
            qid, image_id = int(q["question_id"]), int(q["image_id"])
            answers: list[str] | None = None
            answer_type: str | None = None
            objects: list[str] | None = None
            if has_answers:
                ann = annotations.get(q["question_id"])
                if ann is None:
                    raise DatasetError(f"{a_file}: no annotation for question {qid} of {q_file}")
                answers = [_answer(a, a_file, qid) for a in ann["answers"]]
                answer_type = str(ann["answer_type"])
            if tags is not None:
                if image_id not in tags:
                    raise DatasetError(f"{object_tags}: no object tags for image {image_id}")
                objects = tags[image_id]
            image_path = root / image_dir / f"COCO_{image_dir}_{image_id:012d}.jpg"
            samples.append(
                VQASample(
                    qid, image_id, image_path, str(q["question"]), answers, answer_type, objects
                )
            )
        super().__init__(samples, q_file, check_images)


def _answer(record: Any, path: Path, qid: int) -> str:
    return str(require_keys(record, ("answer",), path, f"question {qid} answers")["answer"])


def write_vqa_submission(predictions: Mapping[int, str], path: str | Path) -> Path:
    """Write the EvalAI result file ``[{"question_id": int, "answer": str}, ...]``.

    The VQA challenge asks for answers to every test2015 question, also for test-dev.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = [{"question_id": int(q), "answer": a} for q, a in predictions.items()]
    with path.open("w", encoding="utf-8") as f:
        json.dump(results, f)
    return path
