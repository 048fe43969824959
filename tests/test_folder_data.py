"""The folder data format (``ofa_vl.data.folder``): every variant written by hand, read back and
compared with hand-written samples and training examples, bad lines included."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ofa_vl.data.common import DatasetError
from ofa_vl.data.folder import (
    infer_task,
    is_folder_dataset,
    read_dataset,
    read_folder,
    training_examples,
)
from ofa_vl.data.training import REGION_PROMPT, Example
from ofa_vl.tasks import get_task
from ofa_vl.tasks.samples import Sample
from ofa_vl.tasks.vqa import VQAAnswers


def _image(path: Path, size: tuple[int, int] = (40, 30), colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _jsonl(path: Path, rows: Sequence[dict[str, Any] | str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines))


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _brief(samples: Sequence[Sample]) -> list[tuple[Any, ...]]:
    """(id, image name, task, split, line) of each sample."""
    return [(s.id, s.image.name, s.task, s.split, s.where.split("/")[-1]) for s in samples]


def test_captions_jsonl_with_a_split_column(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.jpg"):
        _image(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    _jsonl(
        tmp_path / "metadata.jsonl",
        [
            {"file_name": "a.png", "caption": "A red Bike.", "split": "train"},
            {"file_name": "b.png", "captions": ["one", "two"], "split": "val"},
            {"file_name": "missing.png", "caption": "x", "split": "train"},
            {"file_name": "c.jpg", "caption": "  ", "split": "test"},
            "{not json",
            {"file_name": "broken.png", "caption": "y"},
            {"file_name": "c.jpg", "caption": "z", "split": "holdout"},
            {"file_name": "c.jpg", "caption": "last one"},
        ],
    )
    data = read_folder(tmp_path)
    assert _brief(data.samples) == [
        (0, "a.png", "caption", "train", "metadata.jsonl:1"),
        (1, "b.png", "caption", "validation", "metadata.jsonl:2"),
        (7, "c.jpg", "caption", "train", "metadata.jsonl:8"),  # no split: HF's "train"
    ]
    assert [s.truth for s in data.samples] == [("A red Bike.",), ("one", "two"), ("last one",)]
    where = str(tmp_path / "metadata.jsonl")
    assert data.problems == [
        f"{where}:3: image {tmp_path / 'missing.png'} not found",
        f"{where}:4: empty 'caption'",
        f"{where}:5: not a JSON object (Expecting property name enclosed in double quotes)",
        f"{where}:6: image {tmp_path / 'broken.png'} is not a readable image "
        f"(cannot identify image file '{tmp_path / 'broken.png'}')",
        f"{where}:7: unknown split 'holdout' (use train, validation, test)",
    ]
    assert data.splits == ["train", "validation"] and data.tasks == ["caption"]
    with pytest.raises(DatasetError, match=r"metadata.jsonl:3: image .*missing.png not found"):
        read_folder(tmp_path, strict=True)
    examples = training_examples(data.select("validation"))
    prompt = " what does the image describe?"
    assert examples == [
        Example("caption", tmp_path / "b.png", prompt, " one"),
        Example("caption", tmp_path / "b.png", prompt, " two"),
    ]
    assert training_examples(data.select("train"))[0].target == " a red bike"  # OFA's cleaning


def test_grounding_csv_in_split_folders_with_coco_bbox(tmp_path: Path) -> None:
    _image(tmp_path / "train" / "p.png", (100, 50))
    _image(tmp_path / "validation" / "q.png", (100, 50))
    _csv(
        tmp_path / "train" / "metadata.csv",
        ["file_name", "text", "box"],
        [
            ["p.png", "the left dog", "[10, 5, 60, 45]"],
            ["p.png", "outside", "[10, 5, 120, 45]"],  # x2 beyond the 100 px width
            ["p.png", "", "[10, 5, 60, 45]"],
            ["p.png", "bad box", "[1, 2, 3]"],
            ["p.png", "no box", ""],
        ],
    )
    _csv(
        tmp_path / "validation" / "metadata.csv",
        ["file_name", "text", "bbox"],
        [["q.png", "the cat", "[10, 5, 50, 40]"], ["q.png", "too tall", "[0, 20, 10, 40]"]],
    )
    data = read_folder(tmp_path)
    assert _brief(data.samples) == [
        (0, "p.png", "refcoco", "train", "metadata.csv:2"),
        (5, "q.png", "refcoco", "validation", "metadata.csv:2"),
    ]
    first = data.samples[0]
    assert first.truth == (10.0, 5.0, 60.0, 45.0) and first.fields == {"text": "the left dog"}
    assert data.samples[1].truth == (10.0, 5.0, 60.0, 45.0)  # COCO [x, y, w, h] -> XYXY
    train, val = tmp_path / "train" / "metadata.csv", tmp_path / "validation" / "metadata.csv"
    assert data.problems == [
        f"{train}:3: box [10, 5, 120, 45] is not a box inside the 100x50 image",
        f"{train}:4: empty 'text'",
        f"{train}:5: box must be 4 numbers, got '[1, 2, 3]'",
        f"{train}:6: missing column 'box' (or 'bbox')",
        f"{val}:3: bbox [0, 20, 10, 40] is not a box inside the 100x50 image",
    ]
    task = get_task("refcoco")
    (example,) = training_examples(data.select("train"), lambda name: task)
    assert example == Example(
        "refcoco",
        tmp_path / "train" / "p.png",
        ' which region does the text " the left dog " describe?',
        box=(10.0, 5.0, 60.0, 45.0),
    )


def test_vqa_with_several_answers_and_the_models_text_normalisation(tmp_path: Path) -> None:
    _image(tmp_path / "test" / "v.jpg")
    _jsonl(
        tmp_path / "metadata.jsonl",
        [
            {
                "file_name": "test/v.jpg",
                "question": "What colour?",
                "answers": ["red", "red", "pink"],
            },
            {"file_name": "test/v.jpg", "question": "Is it red?", "answer": "yes"},
            {"file_name": "test/v.jpg", "question": "Empty answers?", "answers": []},
        ],
    )
    data = read_folder(tmp_path)
    assert [(s.split, s.fields["question"], s.truth) for s in data.samples] == [
        ("test", "What colour?", VQAAnswers(("red", "red", "pink"))),  # split from the folder
        ("test", "Is it red?", VQAAnswers(("yes",))),
    ]
    assert data.problems == [f"{tmp_path / 'metadata.jsonl'}:3: empty 'answers'"]
    official = get_task("vqa", text_norm={"question": "pre_question"})  # an official model's
    examples = training_examples(data.samples, lambda name: official)
    assert [(e.prompt, e.target) for e in examples] == [
        (" what colour?", " red"),  # the most common answer, the question as the model reads it
        (" is it red?", " yes"),
    ]


def test_a_mixture_through_the_task_column(tmp_path: Path) -> None:
    _image(tmp_path / "m.png", (64, 48))
    rows: list[dict[str, Any]] = [
        {"task": "caption", "caption": "two dogs"},
        {"task": "grounding", "text": "the dog", "box": [0, 0, 32, 48]},
        {"task": "vqa", "question": "how many dogs?", "answer": "2"},
        {"task": "region_caption", "caption": "a dog", "bbox": [32, 0, 32, 48]},
        {"task": "matching", "caption": "two cats", "label": "false"},
        {"task": "classify", "label": "dogs"},
        {"task": "ask", "prompt": "what is left?", "target": "a dog"},
        {"task": "detection", "caption": "x"},
        {"task": "itm", "caption": "two dogs", "label": "maybe"},
        {"caption": "no task"},
    ]
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "m.png", **r} for r in rows])
    data = read_folder(tmp_path)
    tasks = ["caption", "refcoco", "vqa", "region_caption", "itm", "classify", "ask"]
    assert [s.task for s in data.samples] == tasks
    assert data.tasks == sorted(tasks)
    where = f"{tmp_path / 'metadata.jsonl'}"
    registered = "caption, classify, refcoco, ask, itm, region_caption, vqa"  # FOLDER_TASKS
    assert data.problems == [
        f"{where}:8: unknown task 'detection' (folder tasks: {registered})",
        f"{where}:9: matching label must be yes/no (true/false, 1/0), got 'maybe'",
        f"{where}:10: no task: add a 'task' column or the columns of one task",
    ]
    image = tmp_path / "m.png"
    assert training_examples(data.samples) == [
        Example("caption", image, " what does the image describe?", " two dogs"),
        Example("refcoco", image, ' which region does the text " the dog " describe?',
                box=(0.0, 0.0, 32.0, 48.0)),
        Example("vqa", image, " how many dogs?", " 2"),
        Example("region_caption", image, REGION_PROMPT, " a dog", region=(32.0, 0.0, 64.0, 48.0)),
        Example("itm", image, ' does the image describe " two cats "?', " no"),
        Example("classify", image, " what does the image describe?", " dogs"),
        Example("ask", image, " what is left?", " a dog"),
    ]  # fmt: skip
    only = read_folder(tmp_path, task="vqa")
    assert [s.id for s in only.samples] == [2]
    assert only.problems == [data.problems[0], data.problems[2]]  # bad lines whatever the task


@pytest.mark.parametrize(
    ("columns", "task"),
    [
        ({"caption"}, "caption"),
        ({"captions"}, "caption"),
        ({"text", "box"}, "refcoco"),
        ({"text", "bbox"}, "refcoco"),
        ({"question", "answers"}, "vqa"),
        ({"caption", "box"}, "region_caption"),
        ({"caption", "label"}, "itm"),
        ({"label"}, "classify"),
        ({"prompt", "target"}, "ask"),
        ({"question"}, None),
        ({"notes"}, None),
    ],
)
def test_the_column_set_names_the_task(columns: set[str], task: str | None) -> None:
    assert infer_task(columns | {"file_name"}) == task


def test_whole_folder_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data folder not found"):
        read_folder(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no metadata.jsonl or metadata.csv"):
        read_folder(tmp_path)
    assert not is_folder_dataset(tmp_path)
    _csv(tmp_path / "metadata.csv", ["image", "caption"], [["a.png", "x"]])
    assert is_folder_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no 'file_name' column"):
        read_folder(tmp_path)
    _csv(tmp_path / "metadata.csv", ["file_name", "notes"], [["a.png", "x"]])
    with pytest.raises(DatasetError, match=r"columns \['file_name', 'notes'\] are no task's"):
        read_folder(tmp_path)
    _csv(tmp_path / "metadata.csv", ["file_name", "caption"], [["a.png", "x"]])
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "metadata.jsonl").write_text("")  # an empty file adds nothing
    with pytest.raises(DatasetError, match="no usable lines; first problem: .*a.png not found"):
        read_folder(tmp_path)
    with pytest.raises(DatasetError, match="unknown task 'segment'"):
        read_folder(tmp_path, task="segment")


class _StandIn:
    """What ``datasets.Dataset`` offers the reader: ``column_names`` and rows as dicts (the
    ``datasets`` library itself is not installed: it brings pyarrow and pandas)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.column_names = list(rows[0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


def test_a_datasets_object_is_read_like_a_folder(tmp_path: Path) -> None:
    on_disk = _image(tmp_path / "disk.png", (20, 10))
    in_memory = Image.new("RGB", (16, 8), "blue")
    train = _StandIn(
        [
            {"image": in_memory, "text": "blue", "bbox": [0, 0, 8, 8]},
            {"image": {"path": str(on_disk), "bytes": None}, "text": "all", "bbox": [0, 0, 20, 10]},
            {"image": None, "text": "none", "bbox": [0, 0, 1, 1]},
        ]
    )
    test = _StandIn([{"image": {"path": None, "bytes": on_disk.read_bytes()}, "text": "t",
                      "bbox": [1, 1, 2, 2]}])  # fmt: skip
    data = read_dataset({"train": train, "test": test}, cache_dir=tmp_path / "cache")
    assert [(s.id, s.split, s.fields["text"], s.truth) for s in data.samples] == [
        (0, "train", "blue", (0.0, 0.0, 8.0, 8.0)),
        (1, "train", "all", (0.0, 0.0, 20.0, 10.0)),
        (3, "test", "t", (1.0, 1.0, 3.0, 3.0)),
    ]
    assert data.samples[1].image == on_disk
    written = data.samples[0].image
    assert written.parent == tmp_path / "cache" and Image.open(written).size == (16, 8)
    assert Image.open(data.samples[2].image).size == (20, 10)
    assert data.problems == ["dataset[train] row 2: missing column 'image'"]
    one = read_dataset(train, task="refcoco", cache_dir=tmp_path / "c2")
    assert [s.split for s in one.samples] == ["train", "train"]
