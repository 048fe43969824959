"""What ``ofa predict`` reads: any collection of images as one stream of typed :class:`Record`.

Kinds, told apart by the argument: a directory (walked recursively, sorted), a glob, a text file
of paths or URLs (``.txt``, one a line), a table (``.csv``, ``.jsonl``, ``.parquet``) with HF
``datasets``' columns (``file_name`` or ``image``: a path or the encoded bytes, plus the task's
fields such as ``question``), and WebDataset tar shards (``shard-{000..009}.tar``: members grouped
by key, an image member and an optional ``.json`` of fields). Records are read lazily, in a fixed
order: record ``i`` is the same on every rank and after a resume. A row that cannot be read is a
record with an ``error``, never a stop.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.folder import _rows
from ..errors import OFAFileNotFoundError, OFAValueError
from ..images import IMAGE_SUFFIXES

__all__ = ["Record", "TarMember", "count_records", "expand_braces", "image_source", "read_inputs"]

TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PATH_COLUMNS = ("file_name", "image", "path", "url")  # HF imagefolder's, then common names
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


@dataclass(frozen=True)
class TarMember:
    """An image inside an uncompressed tar shard, read only by the worker that loads it."""

    shard: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


ImageRef = str | bytes | TarMember


@dataclass(frozen=True)
class Record:
    """One input: its place in the stream, its id (a path or key), the image and its text fields."""

    index: int
    id: str
    image: ImageRef | None
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a bad row: why it cannot be predicted


def image_source(image: ImageRef) -> str | bytes:
    """What :meth:`~ofa_vl.preprocess.PreprocessConfig.image` reads: a path / URL or bytes."""
    return image.read() if isinstance(image, TarMember) else image


def expand_braces(pattern: str) -> list[str]:
    """Shell brace expansion: ``a{0..2}`` -> a0 a1 a2 (zero padding kept), ``{x,y}`` -> x y."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    if span := _RANGE.match(body):
        lo, hi = int(span.group(1)), int(span.group(2))
        width = len(span.group(1)) if span.group(1).lstrip("-").startswith("0") else 0
        step = 1 if hi >= lo else -1
        options = [f"{n:0{width}d}" for n in range(lo, hi + step, step)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [out for o in options for out in expand_braces(head + o + tail)]


def _is_tar(path: str) -> bool:
    return path.lower().endswith(TAR_SUFFIXES)


def _sources(inputs: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(kind, path) of every input: ``dir``, ``list``, ``table``, ``tar`` or ``image``."""
    for given in inputs:
        for arg in expand_braces(given):
            path = Path(arg)
            if arg.startswith(("http://", "https://")):
                yield "image", arg
            elif path.is_dir():
                yield "dir", arg
            elif path.is_file():
                suffix = path.suffix.lower()
                kind = "list" if suffix == ".txt" else "table" if suffix in TABLE_SUFFIXES else ""
                yield kind or ("tar" if _is_tar(arg) else "image"), arg
            elif matches := sorted(glob.glob(arg, recursive=True)):
                yield from (("tar" if _is_tar(m) else "image", m) for m in matches)
            else:
                raise OFAFileNotFoundError(f"{arg}: no such file, directory, shard or pattern")


def _walk(root: str) -> Iterator[str]:
    """The images under ``root``, sorted per folder, streamed (os.walk, not a list of all)."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                yield os.path.join(folder, name)


def _resolved(value: str, base: Path) -> str:
    """A path relative to ``base`` (a list's or table's folder, as HF's ``file_name``); URLs and
    absolute paths as they are."""
    remote = value.startswith(("http://", "https://"))
    return value if remote or os.path.isabs(value) else str(base / value)


def _listed(path: str) -> Iterator[tuple[str, str]]:
    """(as written, resolved) of a text file's paths / URLs, one a line (blank and ``#`` lines
    skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            item = line.strip()
            if item and not item.startswith("#"):
                yield item, _resolved(item, Path(path).parent)


def _images(kind: str, path: str) -> Iterator[tuple[str, str]]:
    """(id, path) of a folder's images, a list's lines or one image."""
    if kind == "list":
        return _listed(path)
    return ((p, p) for p in (_walk(path) if kind == "dir" else [path]))


def _field_value(value: Any) -> Any:
    """A CSV cell holding a JSON list (``objects``, ``region``) decoded; others as they are."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _image_cell(row: Mapping[str, Any]) -> bytes | str | None:
    """The image of a row: bytes in its ``image`` column (or HF's ``{"bytes", "path"}``), else
    the first path column given."""
    for column in PATH_COLUMNS:
        value = row.get(column)
        if isinstance(value, Mapping):  # HF datasets' Image feature
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)) and value:
            return bytes(value)
    paths = (row.get(c) for c in PATH_COLUMNS if isinstance(row.get(c), str))
    return next((p.strip() for p in paths if p and p.strip()), None)


def _row_record(
    index: int, row: Mapping[str, Any], base: Path, where: str, names: Sequence[str]
) -> Record:
    """A table row as a record: its id (``id``, else its path, else file:line), image and fields."""
    fields = {k: _field_value(row[k]) for k in names if row.get(k) not in (None, "")}
    image = _image_cell(row)
    named = next((str(row[k]) for k in ("id", "file_name") if row.get(k) not in (None, "")), None)
    if isinstance(image, str):
        named, image = named or image, _resolved(image, base)
    if image is None:
        columns = " or ".join(repr(c) for c in PATH_COLUMNS)
        return Record(index, named or where, None, fields, f"{where}: no image ({columns} column)")
    return Record(index, named or where, image, fields)


def _table_rows(path: str) -> Iterator[tuple[str, Mapping[str, Any] | str]]:
    """(where, row) of a table; a row that cannot be parsed is a message."""
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                n += 1
                yield f"{path}:{n}", row
        return
    for line, row in _rows(Path(path)):
        yield f"{path}:{line}", row


def _table(path: str, start: int, names: Sequence[str]) -> Iterator[Record]:
    for i, (where, row) in enumerate(_table_rows(path), start):
        if isinstance(row, str):
            yield Record(i, where, None, {}, f"{where}: {row}")
        else:
            yield _row_record(i, row, Path(path).parent, where, names)


def _wds_key(name: str) -> tuple[str, str]:
    """WebDataset's split of a member name: key (up to the basename's first dot) and extension."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _tar_samples(shard: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {extension: data}) of a WebDataset shard; images of plain tars as references."""
    lazy = shard.lower().endswith(".tar")
    key: str | None = None
    parts: dict[str, bytes | TarMember] = {}
    with tarfile.open(shard, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, ext = _wds_key(member.name)
            if k != key and key is not None:
                yield key, parts
                parts = {}
            key = k
            if lazy and "." + ext.rsplit(".", 1)[-1] in IMAGE_SUFFIXES:
                parts[ext] = TarMember(shard, member.offset_data, member.size)
            else:
                f = tar.extractfile(member)
                parts[ext] = f.read() if f is not None else b""
    if key is not None:
        yield key, parts


def _sample_record(i: int, key: str, parts: dict[str, Any], names: Sequence[str]) -> Record:
    image = next(
        (v for e, v in parts.items() if "." + e.rsplit(".", 1)[-1] in IMAGE_SUFFIXES), None
    )
    fields: dict[str, Any] = {}
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except ValueError:
            return Record(i, key, image, {}, f"{key}: its .json is not JSON")
        if isinstance(meta, dict):
            fields = {k: meta[k] for k in names if meta.get(k) not in (None, "")}
    if image is None:
        return Record(i, key, None, fields, f"{key}: no image member ({', '.join(parts)})")
    return Record(i, key, image, fields)


def _tar(shard: str, start: int, names: Sequence[str]) -> Iterator[Record]:
    i = start
    try:
        for key, parts in _tar_samples(shard):
            yield _sample_record(i, key, parts, names)
            i += 1
    except (tarfile.TarError, OSError) as e:  # a truncated shard: what was read stands
        yield Record(i, shard, None, {}, f"{shard}: not a readable tar shard ({e})")


def read_inputs(inputs: Sequence[str], field_names: Sequence[str] = ()) -> Iterator[Record]:
    """Every record of ``inputs``, in order; ``field_names``: the task's fields to read from
    table columns and shards' ``.json``."""
    if not inputs:
        raise OFAValueError("ofa predict needs an input: a folder, glob, list, table or shards")
    index = 0
    for kind, path in list(_sources(inputs)):  # every input checked before the first image
        records: Iterator[Record]
        if kind == "table":
            records = _table(path, index, field_names)
        elif kind == "tar":
            records = _tar(path, index, field_names)
        else:
            records = (Record(i, n, p) for i, (n, p) in enumerate(_images(kind, path), index))
        for record in records:
            yield record
            index += 1


def count_records(inputs: Sequence[str]) -> int | None:
    """How many records ``inputs`` hold, when that is cheap to know (no tar shards)."""
    total = 0
    for kind, path in _sources(inputs):
        if kind == "tar":
            return None
        if kind == "table" and path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        elif kind == "table":
            total += sum(1 for _ in _rows(Path(path)))
        else:
            total += sum(1 for _ in _images(kind, path))
    return total
