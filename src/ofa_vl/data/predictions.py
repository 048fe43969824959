"""A run's ``predictions.jsonl``: one JSON object per sample with its ``id``, appended batch by
batch and fsynced, so that a killed run resumes where it stopped (a torn last line is dropped)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import OFAValueError
from .benchmarks import Benchmark

__all__ = ["PREDICTIONS", "append_records", "prepare_output", "read_predictions"]

PREDICTIONS = "predictions.jsonl"


def _scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a predictions file and the byte length of its complete lines."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a kill mid-write leaves a last line without its newline
    records = []
    for n, line in enumerate(data[:end].splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("id"), int)):
            raise OFAValueError(f"{path}: line {n} is not a prediction record ({line[:60]!r})")
        records.append(record)
    return records, end


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of ``predictions.jsonl`` in file order, a torn last line left out."""
    return _scan(Path(path))[0]


def prepare_output(out: Path, resume: bool, bench: Benchmark) -> set[int]:
    """Check ``out`` for this run, cut a torn last line, and return the ids already predicted."""
    path = out / PREDICTIONS
    records, end = _scan(path)
    if path.is_file() and path.stat().st_size and not resume:
        raise OFAValueError(
            f"{path} already holds predictions; pass --resume to continue that run or choose "
            "another --out"
        )
    ids = [r["id"] for r in records]
    foreign = set(ids) - bench.known_ids
    if foreign:
        raise OFAValueError(
            f"{path} holds predictions for ids not in {bench.name} {bench.split} (e.g. "
            f"{sorted(foreign)[:3]}); choose another --out"
        )
    if len(set(ids)) != len(ids):
        raise OFAValueError(
            f"{path} holds the same id twice (written by two runs at once?); choose another --out"
        )
    with path.open("ab") as f:  # creates it; drops a torn last line
        f.truncate(end)
    return set(ids)


def append_records(sink: IO[str], records: Sequence[Mapping[str, Any]]) -> None:
    """One JSON line per record, flushed and fsynced (a kill loses no finished batch)."""
    sink.write("".join(json.dumps(r) + "\n" for r in records))
    sink.flush()
    os.fsync(sink.fileno())
