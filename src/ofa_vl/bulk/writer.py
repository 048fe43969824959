"""Where ``ofa predict`` writes: chunk files while it runs, one result set when it ends.

The records are cut into chunks of fixed size (chunk ``k``: records ``k * C`` to ``(k + 1) * C``).
A finished chunk becomes two files in ``OUT.parts/``, each written whole or not at all
(:func:`~ofa_vl.runs.write_atomic`): its errors, then its rows, whose presence marks the chunk done.
A killed run therefore loses at most the chunks it was computing, and a resumed one skips exactly
the done chunks: no row recomputed, none written twice. Every rank of a torchrun writes its own
chunks there (a shared file system); :func:`merge` streams them, in chunk order, into ``OUT``
(JSONL, Parquet or COCO results) and ``OUT.errors.jsonl``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OFAValueError
from ..formats import coco_entries
from ..runs import publish, write_atomic
from ..tasks import TASKS
from .config import FORMATS

__all__ = ["ChunkStore", "coco_image_id", "merge", "output_format"]
_CHUNK = re.compile(r"^chunk-(\d+)\.jsonl$")


def output_format(out: Path, given: str | None, task: str) -> str:
    """The format asked for, else the one ``out``'s suffix names (``.parquet``), else JSONL."""
    fmt = given or ("parquet" if out.suffix.lower() == ".parquet" else "jsonl")
    if fmt not in FORMATS:
        raise OFAValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "coco" and not TASKS[task].coco_results:  # COCO results: captions, boxes
        raise OFAValueError(f"--format coco holds captions or boxes, not {task!r} results")
    return fmt


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        yield from (json.loads(line) for line in f if line.strip())


def _jsonl(records: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


@dataclass(frozen=True)
class ChunkStore:
    """The chunk files of one run (``OUT.parts/``)."""

    folder: Path

    def rows_file(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:08d}.jsonl"

    def errors_file(self, chunk: int) -> Path:
        return self.folder / f"chunk-{chunk:08d}.errors.jsonl"

    def done(self) -> list[int]:
        """The finished chunks, in order."""
        if not self.folder.is_dir():
            return []
        found = (_CHUNK.match(name) for name in os.listdir(self.folder))
        return sorted(int(m.group(1)) for m in found if m)

    def write(
        self, chunk: int, rows: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]]
    ) -> None:
        """One finished chunk: its errors, then its rows (the mark that it is done)."""
        if errors:
            write_atomic(self.errors_file(chunk), _jsonl(errors))
        write_atomic(self.rows_file(chunk), _jsonl(rows))

    def rows(self, chunk: int) -> Iterator[dict[str, Any]]:
        return _lines(self.rows_file(chunk))

    def errors(self, chunk: int) -> Iterator[dict[str, Any]]:
        path = self.errors_file(chunk)
        return _lines(path) if path.is_file() else iter(())

    def count(self, chunks: Sequence[int]) -> tuple[int, int]:
        """(rows, errors) in ``chunks``."""
        rows = sum(sum(1 for _ in self.rows(k)) for k in chunks)
        return rows, sum(sum(1 for _ in self.errors(k)) for k in chunks)


def coco_image_id(row_id: Any) -> int | str:
    """The COCO image id of a row: the number ending a COCO file name
    (``COCO_val2014_000000000042.jpg``: 42), else the row's id."""
    digits = re.search(r"(\d+)$", Path(str(row_id)).stem)
    return int(digits.group(1)) if digits else str(row_id)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _coco(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """A COCO results JSON list (``formats.coco_entries``), one entry a line."""
    yield "["
    n = 0
    for row in rows:
        for entry in coco_entries(row, coco_image_id(row["id"])):
            yield ("\n" if n == 0 else ",\n") + json.dumps(entry)
            n += 1
    yield "\n]\n"


def _write_parquet(store: ChunkStore, chunks: Sequence[int], out: Path) -> None:
    """One Parquet file, a row group per chunk; the schema is unified over every chunk first (a
    chunk whose boxes are all empty has a null list type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(k: int) -> pa.Table:
        return pa.Table.from_pylist(list(store.rows(k)))

    tables = (t for t in map(table, chunks) if t.num_rows)
    schemas = [t.schema for t in tables]
    if not schemas:
        schemas = [pa.schema([("id", pa.string())])]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    tmp = _tmp(out)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for k in chunks:
                t = table(k)
                if t.num_rows:
                    missing = [f for f in schema if f.name not in t.column_names]
                    for f in missing:
                        t = t.append_column(f, pa.nulls(t.num_rows, f.type))
                    writer.write_table(t.select(schema.names).cast(schema))
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def merge(store: ChunkStore, out: Path, fmt: str, errors_out: Path) -> None:
    """Every chunk's rows, in order, into ``out`` and its errors into ``errors_out`` (removed
    when there are none); streamed, a chunk at a time."""
    chunks = store.done()
    rows = (row for k in chunks for row in store.rows(k))
    if fmt == "parquet":
        _write_parquet(store, chunks, out)
    elif fmt == "coco":
        write_atomic(out, _coco(rows))
    else:
        write_atomic(out, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if any(store.errors_file(k).is_file() for k in chunks):
        errors = (e for k in chunks for e in store.errors(k))
        write_atomic(errors_out, (json.dumps(e, ensure_ascii=False) + "\n" for e in errors))
    else:
        errors_out.unlink(missing_ok=True)
