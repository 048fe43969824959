"""Your own data: a folder of images plus a ``metadata.jsonl`` or ``metadata.csv``.

The layout is the one of HF ``datasets``' image folders (``load_dataset("imagefolder")``): one line
per example, a ``file_name`` column naming the image relative to the metadata file, and the task's
columns beside it::

    DIR/metadata.jsonl            {"file_name": "0001.jpg", "caption": "a red bike"}
    DIR/0001.jpg                  ...

    DIR/train/metadata.csv        split folders (train/, validation/, test/), each with its own
    DIR/validation/metadata.csv   metadata; or one metadata file with a ``split`` column

Each task names its columns (``Task.folder_columns``; the task is read from them, or from a
``task`` column for mixtures) and reads them (``Task.from_columns``): ``caption`` caption |
captions; ``refcoco`` text + box | bbox (``box`` = [x1, y1, x2, y2] pixels, ``bbox`` = COCO's
[x, y, w, h]); ``vqa`` question + answer | answers (the human answers); ``region_caption``
caption + box | bbox; ``itm`` caption + label (yes/no, true/false, 1/0); ``classify`` label;
``ask`` prompt + target.

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
from ..tasks.samples import ColumnError, Example, Sample, given
from .common import DatasetError

__all__ = [
    "FOLDER_TASKS",
    "METADATA_FILES",
    "SPLITS",
    "FolderData",
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
# the tasks that read folder lines (Task.folder_columns), in registration order
_FOLDER: dict[str, type[Task]] = {c.name: c for c in TASKS.values() if c.folder_columns}
FOLDER_TASKS = tuple(_FOLDER)
# column inference: the tasks naming more columns first (text + box before a caption alone)
_BY_COLUMNS = sorted(
    _FOLDER.values(),
    key=lambda c: (-len(c.folder_columns), -sum(g.count("|") for g in c.folder_columns)),
)


@dataclass
class FolderData:
    """The good samples of a folder (all splits) and one message per skipped line."""

    root: str
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return sorted({s.task for s in self.samples})

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if any(x.split == s for x in self.samples)]

    def select(self, split: str, task: str | None = None) -> list[Sample]:
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


# --------------------------------------------------------------------------- tasks and columns
def infer_task(columns: Iterable[str]) -> str | None:
    """The task a column set belongs to (each task's ``folder_columns``), or None."""
    c = set(columns)
    for cls in _BY_COLUMNS:
        if all(c & set(group.split("|")) for group in cls.folder_columns):
            return cls.name
    return None


def _task_name(value: Any) -> str:
    cls = TASKS.get(str(value).strip())
    if cls is None or cls.name not in _FOLDER:
        raise ColumnError(f"unknown task {value!r} (folder tasks: {', '.join(FOLDER_TASKS)})")
    return cls.name


def _split_name(value: Any) -> str:
    name = _SPLIT_ALIASES.get(str(value).strip().lower())
    if name is None:
        raise ColumnError(f"unknown split {value!r} (use {', '.join(SPLITS)})")
    return name


# --------------------------------------------------------------------------- images
def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as :func:`ofa_vl.images.load_image` will see it; decodes the image (at
    reduced size for JPEG) so that a truncated file is found now, not at step 5,000."""
    if not path.is_file():
        raise ColumnError(f"image {path} not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that transpose
                w, h = h, w
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ColumnError(f"image {path} is not a readable image ({e})") from None
    return w, h


# --------------------------------------------------------------------------- reading
@dataclass
class _Reader:
    """Turns lines into samples; remembers the bad ones."""

    task: str | None  # keep only this task's lines (also the task of files that do not say)
    strict: bool
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sizes: dict[Path, tuple[int, int] | str] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    seen: int = 0

    def task_for(self, name: str) -> Task:
        """The task reading ``name``'s columns (one default instance each)."""
        if name not in self.tasks:
            self.tasks[name] = _FOLDER[name]()
        return self.tasks[name]

    def size(self, path: Path) -> tuple[int, int]:
        if path not in self.sizes:
            try:
                self.sizes[path] = _image_size(path)
            except ColumnError as e:
                self.sizes[path] = str(e)
        found = self.sizes[path]
        if isinstance(found, str):
            raise ColumnError(found)
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
            task = _task_name(row["task"]) if given(row, "task") else file_task
            if task is None:
                raise ColumnError("no task: add a 'task' column or the columns of one task")
            if self.task is not None and task != self.task:
                return
            path = image()
            fields, truth = self.task_for(task).from_columns(row, self.size(path))
            if split is None:
                split = _split_name(row["split"]) if given(row, "split") else "train"
            self.samples.append(Sample(sample_id, path, fields, truth, task, split, where))
        except ColumnError as e:
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
        sets = "; ".join(" + ".join(c.folder_columns) for c in _BY_COLUMNS)
        raise DatasetError(
            f"{path}: columns {sorted(columns)} are no task's; expected a 'task' column or one "
            f"of: {sets}"
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
        if row_split is None and not given(row, "split") and first in _SPLIT_ALIASES:
            row_split = _SPLIT_ALIASES[first]  # "train/0001.jpg" in a root metadata file

        def image(name: str = name) -> Path:
            if not name.strip():
                raise ColumnError("missing column 'file_name'")
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
    except ColumnError as e:
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
    raise ColumnError(f"image column holds {type(value).__name__}, not an image")


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
                if not given(row, image_column):
                    raise ColumnError(f"missing column {image_column!r}")
                return _image_file(row[image_column], cache, index)

            where = f"dataset{'' if split is None else f'[{split}]'} row {i}"
            reader.add(row, image, where, file_task, split)
    return _finish("dataset", reader, wanted)


def split_name(name: str) -> str:
    """One of :data:`SPLITS` from HF's names for it (``val``, ``dev``, ...), or one clear error."""
    try:
        return _split_name(name)
    except ColumnError as e:
        raise DatasetError(str(e)) from None


# --------------------------------------------------------------------------- training examples
def training_examples(
    samples: Iterable[Sample], task_for: Callable[[str], Task] = get_task
) -> list[Example]:
    """The training examples of folder samples, built by the tasks the model runs at inference
    (``task_for(name)``: its prompts and text normalisation; :meth:`Task.examples`)."""
    return [e for s in samples for e in task_for(s.task).examples(s)]
