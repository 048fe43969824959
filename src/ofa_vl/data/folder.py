"""Your own data: a folder of images plus a ``metadata.jsonl`` or ``metadata.csv``.

The layout is the one of HF ``datasets``' image folders (``load_dataset("imagefolder")``): one line
per example, a ``file_name`` column naming the image relative to the metadata file, and the task's
columns beside it::

    DIR/metadata.jsonl            {"file_name": "0001.jpg", "caption": "a red bike"}
    DIR/0001.jpg                  ...

    DIR/train/metadata.csv        split folders (train/, validation/, test/), each with its own
    DIR/validation/metadata.csv   metadata; or one metadata file with a ``split`` column

Column sets, one per task (the task is read from them, or from a ``task`` column for mixtures):

=================  ==================  =================================================
task               columns             meaning
=================  ==================  =================================================
``caption``        caption | captions  one reference caption, or a list of them
``refcoco``        text + box | bbox   grounding: ``box`` = [x1, y1, x2, y2] pixels;
                                       ``bbox`` = COCO's [x, y, w, h] pixels
``vqa``            question + answer   one answer, or ``answers``: the human answers
                   | answers           (scored with the VQA accuracy)
``region_caption`` box | bbox +        describe a region
                   caption
``itm``            caption + label     image-text matching; label yes/no (true/false, 1/0)
``classify``       label               a class name
``ask``            prompt + target     any instruction and its answer
=================  ==================  =================================================

In a CSV file, list values (``captions``, ``answers``, ``box``, ``bbox``) are JSON (``"[1, 2, 3,
4]"``). Split names follow HF too: ``val`` / ``valid`` / ``dev`` are ``validation``, a folder
without any split is the ``train`` split. Every bad line (missing or unreadable image, a box
outside its image, an unknown task, an empty text, a missing column) is reported with its file
and line number and skipped, or refused with ``strict=True``.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..tasks import TASKS, Task, get_task
from ..tasks.region_caption import REGION_PROMPT
from .common import DatasetError
from .training import Example, caption_target, most_common_answer

__all__ = [
    "FOLDER_TASKS",
    "METADATA_FILES",
    "SPLITS",
    "FolderData",
    "FolderSample",
    "infer_task",
    "is_folder_dataset",
    "read_dataset",
    "read_folder",
    "split_name",
    "training_examples",
]

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
SPLITS = ("train", "validation", "test")
# HF datasets' split names (datasets/data_files.py keywords) -> ours
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}  # fmt: skip
FOLDER_TASKS = ("caption", "refcoco", "vqa", "region_caption", "itm", "classify", "ask")
_YES_NO = {"yes": "yes", "true": "yes", "1": "yes", "no": "no", "false": "no", "0": "no"}
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class FolderSample:
    """One good line of a folder dataset; ``box`` is XYXY pixels of the image as loaded."""

    sample_id: int  # the line's position among all lines read (a stable prediction key)
    image_path: Path
    task: str  # one of FOLDER_TASKS
    split: str  # one of SPLITS
    where: str  # "DIR/metadata.jsonl:12"
    captions: tuple[str, ...] = ()  # caption, region caption or matching text
    text: str = ""  # grounding expression
    question: str = ""
    answers: tuple[str, ...] = ()
    box: Box | None = None  # grounding target or described region
    label: str = ""  # matching "yes" / "no", or a class name
    prompt: str = ""
    target: str = ""


@dataclass
class FolderData:
    """The good samples of a folder (all splits) and one message per skipped line."""

    root: str
    samples: list[FolderSample]
    problems: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return sorted({s.task for s in self.samples})

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if any(x.split == s for x in self.samples)]

    def select(self, split: str, task: str | None = None) -> list[FolderSample]:
        """The samples of one split (and task), file order."""
        return [s for s in self.samples if s.split == split and task in (None, s.task)]

    def report(self, file: Any = None) -> None:
        """Print the skipped lines, one each, and how many there were."""
        out = file or sys.stderr
        for p in self.problems:
            print(f"ofa: skipped {p}", file=out)
        if self.problems:
            total = len(self.samples) + len(self.problems)
            print(f"ofa: skipped {len(self.problems)} of {total} lines of {self.root}", file=out)


class _BadLine(Exception):
    """One line that cannot be used (the message says why)."""


# --------------------------------------------------------------------------- tasks and columns
def _given(row: Mapping[str, Any], key: str) -> bool:
    value = row.get(key)
    return value is not None and value != "" and value != []


def infer_task(columns: Iterable[str]) -> str | None:
    """The task a column set belongs to (module table), or None."""
    c = set(columns)
    has_box = bool(c & {"box", "bbox"})
    if {"prompt", "target"} <= c:
        return "ask"
    if "question" in c and c & {"answer", "answers"}:
        return "vqa"
    if "text" in c and has_box:
        return "refcoco"
    if "caption" in c and has_box:
        return "region_caption"
    if "caption" in c and "label" in c:
        return "itm"
    if c & {"caption", "captions"}:
        return "caption"
    if "label" in c:
        return "classify"
    return None


def _task_name(value: Any) -> str:
    cls = TASKS.get(str(value).strip())
    if cls is None or cls.name not in FOLDER_TASKS:
        raise _BadLine(f"unknown task {value!r} (folder tasks: {', '.join(FOLDER_TASKS)})")
    return cls.name


def _split_name(value: Any) -> str:
    name = _SPLIT_ALIASES.get(str(value).strip().lower())
    if name is None:
        raise _BadLine(f"unknown split {value!r} (use {', '.join(SPLITS)})")
    return name


# --------------------------------------------------------------------------- values
def _json_value(value: Any) -> Any:
    """A CSV cell holding a JSON list is decoded; anything else is returned as is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise _BadLine(f"{value!r} is not a JSON list") from None
    return value


def _text(row: Mapping[str, Any], key: str) -> str:
    if key not in row or row[key] is None:
        raise _BadLine(f"missing column {key!r}")
    if not isinstance(row[key], (str, int, float)) or not str(row[key]).strip():
        raise _BadLine(f"empty {key!r}")
    return str(row[key]).strip()


def _texts(row: Mapping[str, Any], one: str, many: str) -> tuple[str, ...]:
    """``one`` (a text) or ``many`` (a list of texts, JSON in a CSV)."""
    if _given(row, many):
        values = _json_value(row[many])
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            raise _BadLine(f"{many!r} must be a non-empty list of texts, got {values!r}")
        if not all(isinstance(v, (str, int, float)) and str(v).strip() for v in values):
            raise _BadLine(f"empty text in {many!r}")
        return tuple(str(v).strip() for v in values)
    if one not in row and many not in row:
        raise _BadLine(f"missing column {one!r} (or {many!r})")
    return (_text(row, one if one in row else many),)


def _box(row: Mapping[str, Any], size: tuple[int, int]) -> Box:
    """``box`` (XYXY) or ``bbox`` (COCO XYWH, as the column name says) inside the image."""
    key = "box" if _given(row, "box") else "bbox"
    if not _given(row, key):
        raise _BadLine("missing column 'box' (or 'bbox')")
    raw = _json_value(row[key])
    try:
        a, b, c, d = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise _BadLine(f"{key} must be 4 numbers, got {row[key]!r}") from None
    x1, y1, x2, y2 = (a, b, a + c, b + d) if key == "bbox" else (a, b, c, d)  # COCO: XYWH
    w, h = size
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise _BadLine(f"{key} {list(raw)} is not a box inside the {w}x{h} image")
    return (x1, y1, x2, y2)


def _fields(task: str, row: Mapping[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The sample fields of one line of ``task``."""
    if task == "caption":
        return {"captions": _texts(row, "caption", "captions")}
    if task == "refcoco":
        return {"text": _text(row, "text"), "box": _box(row, size)}
    if task == "vqa":
        return {"question": _text(row, "question"), "answers": _texts(row, "answer", "answers")}
    if task == "region_caption":
        return {"captions": _texts(row, "caption", "captions"), "box": _box(row, size)}
    if task == "itm":
        label = _YES_NO.get(_text(row, "label").lower())
        if label is None:
            raise _BadLine(f"matching label must be yes/no (true/false, 1/0), got {row['label']!r}")
        return {"captions": (_text(row, "caption"),), "label": label}
    if task == "classify":
        return {"label": _text(row, "label")}
    return {"prompt": _text(row, "prompt"), "target": _text(row, "target")}


# --------------------------------------------------------------------------- images
def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as :func:`ofa_vl.images.load_image` will see it; decodes the image (at
    reduced size for JPEG) so that a truncated file is found now, not at step 5,000."""
    if not path.is_file():
        raise _BadLine(f"image {path} not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that transpose
                w, h = h, w
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _BadLine(f"image {path} is not a readable image ({e})") from None
    return w, h


# --------------------------------------------------------------------------- reading
@dataclass
class _Reader:
    """Turns lines into samples; remembers the bad ones."""

    task: str | None  # keep only this task's lines (also the task of files that do not say)
    strict: bool
    samples: list[FolderSample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sizes: dict[Path, tuple[int, int] | str] = field(default_factory=dict)
    seen: int = 0

    def size(self, path: Path) -> tuple[int, int]:
        if path not in self.sizes:
            try:
                self.sizes[path] = _image_size(path)
            except _BadLine as e:
                self.sizes[path] = str(e)
        found = self.sizes[path]
        if isinstance(found, str):
            raise _BadLine(found)
        return found

    def add(
        self,
        row: Mapping[str, Any],
        image: Callable[[], Path],
        where: str,
        file_task: str | None,
        split: str | None,
    ) -> None:
        """Read one line; a bad one is recorded (or, strict, refused)."""
        sample_id, self.seen = self.seen, self.seen + 1
        try:
            task = _task_name(row["task"]) if _given(row, "task") else file_task
            if task is None:
                raise _BadLine("no task: add a 'task' column or the columns of one task")
            if self.task is not None and task != self.task:
                return
            path = image()
            fields = _fields(task, row, self.size(path))
            if split is None:
                split = _split_name(row["split"]) if _given(row, "split") else "train"
            self.samples.append(FolderSample(sample_id, path, task, split, where, **fields))
        except _BadLine as e:
            if self.strict:
                raise DatasetError(f"{where}: {e} (--strict refuses bad lines)") from None
            self.problems.append(f"{where}: {e}")


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line number, row) of a metadata file; a row that cannot be parsed is a message."""
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}
            return
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, f"not a JSON object ({e.msg})"
                continue
            yield n, row if isinstance(row, dict) else "not a JSON object"


def _columns(path: Path) -> set[str]:
    """The columns of a metadata file (a CSV header, or every key of the JSON lines)."""
    with path.open(encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            return set(next(csv.reader(f), []))
    return {k for _, row in _rows(path) if isinstance(row, Mapping) for k in row}


def _read_file(reader: _Reader, path: Path, split: str | None, label: str) -> None:
    columns = _columns(path)
    if not columns:  # an empty file: no lines
        return
    if "file_name" not in columns:
        raise DatasetError(f"{path}: no 'file_name' column (the image of each line)")
    # a mixture's lines each name their task; a plain file's columns name it
    file_task = None if "task" in columns else reader.task or infer_task(columns)
    if file_task is None and "task" not in columns:
        raise DatasetError(
            f"{path}: columns {sorted(columns)} are no task's; expected a 'task' column or one "
            "of: caption(s); text + box|bbox; question + answer(s); box|bbox + caption; "
            "caption + label; label; prompt + target"
        )
    for n, row in _rows(path):
        where = f"{label}:{n}"
        if isinstance(row, str):
            if reader.strict:
                raise DatasetError(f"{where}: {row} (--strict refuses bad lines)")
            reader.problems.append(f"{where}: {row}")
            reader.seen += 1
            continue
        row_split = split
        name = str(row.get("file_name") or "")
        first = Path(name).parts[0] if name else ""
        if row_split is None and not _given(row, "split") and first in _SPLIT_ALIASES:
            row_split = _SPLIT_ALIASES[first]  # "train/0001.jpg" in a root metadata file

        def image(name: str = name) -> Path:
            if not name.strip():
                raise _BadLine("missing column 'file_name'")
            return path.parent / name

        reader.add(row, image, where, file_task, row_split)


def metadata_files(root: Path) -> list[tuple[Path, str | None]]:
    """The metadata files of a folder and the split each one is (None: its lines say)."""
    found: list[tuple[Path, str | None]] = []
    for name in METADATA_FILES:
        if (root / name).is_file():
            found.append((root / name, None))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        split = _SPLIT_ALIASES.get(sub.name.lower())
        if split is not None:
            found += [(sub / n, split) for n in METADATA_FILES if (sub / n).is_file()]
    return found


def is_folder_dataset(root: str | Path) -> bool:
    """Whether ``root`` holds a metadata file (at its top or in a split folder)."""
    return Path(root).is_dir() and bool(metadata_files(Path(root)))


def read_folder(root: str | Path, task: str | None = None, strict: bool = False) -> FolderData:
    """Every good line of a folder dataset (module docstring), file by file.

    Args:
        root: the folder.
        task: keep only this task's lines (a name or alias of :data:`FOLDER_TASKS`); it is also
            the task of metadata files whose columns do not say.
        strict: refuse the first bad line (one :class:`DatasetError`) instead of skipping it.
    """
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(f"{path}: data folder not found")
    files = metadata_files(path)
    if not files:
        raise DatasetError(
            f"{path}: no {' or '.join(METADATA_FILES)} (at its top or in train/, validation/, "
            "test/ folders)"
        )
    wanted = _known_task(task)
    reader = _Reader(wanted, strict)
    for file, split in files:
        _read_file(reader, file, split, str(file))
    return _finish(str(path), reader, wanted)


def _known_task(task: str | None) -> str | None:
    if task is None:
        return None
    try:
        return _task_name(task)
    except _BadLine as e:
        raise DatasetError(str(e)) from None


def _finish(root: str, reader: _Reader, task: str | None) -> FolderData:
    if not reader.samples:
        what = f"no usable {task!r} lines" if task else "no usable lines"
        first = f"; first problem: {reader.problems[0]}" if reader.problems else ""
        raise DatasetError(f"{root}: {what}{first}")
    return FolderData(root, reader.samples, reader.problems)


# --------------------------------------------------------------------------- datasets.Dataset
def _image_file(value: Any, cache: Path, index: int) -> Path:
    """An image column value of HF ``datasets`` (a PIL image, ``{"path", "bytes"}`` or a path) as
    a file: images that are not files already are written once to ``cache``."""
    if isinstance(value, (str, Path)):
        return Path(value)
    if isinstance(value, Mapping):
        if value.get("path") and Path(value["path"]).is_file():
            return Path(value["path"])
        if value.get("bytes"):
            dest = cache / f"{index:07d}.img"
            dest.write_bytes(value["bytes"])
            return dest
    if isinstance(value, Image.Image):
        dest = cache / f"{index:07d}.png"
        value.save(dest)
        return dest
    raise _BadLine(f"image column holds {type(value).__name__}, not an image")


def read_dataset(
    dataset: Any,
    task: str | None = None,
    strict: bool = False,
    image_column: str = "image",
    cache_dir: str | Path | None = None,
) -> FolderData:
    """The samples of a HF ``datasets.Dataset`` (or a ``DatasetDict``: split name -> Dataset).

    The rows hold the folder format's columns and an ``image_column`` (what
    ``load_dataset("imagefolder")`` gives). Images that are not files are written once to
    ``cache_dir`` (default: a new temporary folder), since training reads image files.
    """
    parts: Sequence[tuple[str | None, Any]]
    if hasattr(dataset, "column_names") and not isinstance(dataset.column_names, Mapping):
        parts = [(None, dataset)]
    else:  # a DatasetDict
        parts = [(split_name(name), ds) for name, ds in dataset.items()]
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="ofa-dataset-"))
    cache.mkdir(parents=True, exist_ok=True)
    wanted = _known_task(task)
    reader = _Reader(wanted, strict)
    for split, ds in parts:
        columns = set(ds.column_names)
        file_task = None if "task" in columns else wanted or infer_task(columns)
        for i, row in enumerate(ds):
            index = reader.seen

            def image(row: Mapping[str, Any] = row, index: int = index) -> Path:
                if not _given(row, image_column):
                    raise _BadLine(f"missing column {image_column!r}")
                return _image_file(row[image_column], cache, index)

            where = f"dataset{'' if split is None else f'[{split}]'} row {i}"
            reader.add(row, image, where, file_task, split)
    return _finish("dataset", reader, wanted)


def split_name(name: str) -> str:
    """One of :data:`SPLITS` from HF's names for it (``val``, ``dev``, ...), or one clear error."""
    try:
        return _split_name(name)
    except _BadLine as e:
        raise DatasetError(str(e)) from None


# --------------------------------------------------------------------------- training examples
def training_examples(
    samples: Iterable[FolderSample], task_for: Callable[[str], Task] = get_task
) -> list[Example]:
    """The training examples of folder samples, built with the tasks the model runs at inference
    (``task_for(name)``: its prompts and text normalisation), one per caption.

    Targets follow :mod:`ofa_vl.data.training` (OFA's datasets): captions cleaned and cut to 20
    words, the most common of several VQA answers, boxes as 4 bin tokens.
    """
    out: list[Example] = []
    for s in samples:
        task = task_for(s.task)
        if s.task == "caption":
            prompt = task.prompt(task.normalize({}))
            out += [Example("caption", s.image_path, prompt, caption_target(c)) for c in s.captions]
        elif s.task == "refcoco":
            fields = task.normalize({"text": s.text})
            out.append(Example("refcoco", s.image_path, task.prompt(fields), box=s.box))
        elif s.task == "vqa":
            fields = task.normalize({"question": s.question})
            answer = " " + most_common_answer(s.answers)
            dprompt = task.decoder_prompt(fields)
            out.append(
                Example("vqa", s.image_path, task.prompt(fields), answer, decoder_prompt=dprompt)
            )
        elif s.task == "region_caption":
            for c in s.captions:
                target = caption_target(c)
                out.append(
                    Example("region_caption", s.image_path, REGION_PROMPT, target, region=s.box)
                )
        elif s.task == "itm":
            prompt = task.prompt(task.normalize({"text": s.captions[0]}))
            out.append(Example("itm", s.image_path, prompt, " " + s.label))
        elif s.task == "classify":
            prompt = task.prompt(task.normalize({}))
            out.append(Example("classify", s.image_path, prompt, " " + s.label))
        else:
            prompt = task.prompt(task.normalize({"prompt": s.prompt}))
            out.append(Example("ask", s.image_path, prompt, " " + s.target))
    return out
