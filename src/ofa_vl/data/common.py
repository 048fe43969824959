"""Helpers shared by the dataset readers: one error type, checked JSON/pickle loading, image checks.

Every reader fails with a single :class:`DatasetError` line naming the offending file and what was
expected there, instead of a ``KeyError`` deep inside a DataLoader worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from torch.utils.data import Dataset

from ..errors import OFAValueError
from ..unpickle import UnpickleError, load_data_pickle

ImageCheck = Literal["eager", "lazy"]


class DatasetError(OFAValueError):
    """A dataset file is missing or does not have the expected layout."""


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise naming ``what`` the file should hold."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected {what})")
    return path


def load_json(path: Path, expected: type | tuple[type, ...], what: str) -> Any:
    """Load a JSON file whose top level must be of the ``expected`` type(s) (list, dict)."""
    require_file(path, what)
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e}); expected {what}") from None
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(data, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DatasetError(
            f"{path}: top level is a JSON {type(data).__name__}, expected a {names} ({what})"
        )
    return data


def require_keys(record: Any, keys: Sequence[str], path: Path, where: str) -> Mapping[str, Any]:
    """Check that ``record`` (entry ``where`` of ``path``) is a mapping holding all ``keys``."""
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"{path}: {where} is a {type(record).__name__}, expected an object with keys {list(keys)}"
        )
    missing = [k for k in keys if k not in record]
    if missing:
        raise DatasetError(f"{path}: {where} lacks key(s) {missing} (expected keys {list(keys)})")
    return record


def load_pickle(path: Path, what: str) -> Any:
    """Load a data pickle through the restricted unpickler (plain containers and scalars only)."""
    require_file(path, what)
    try:
        return load_data_pickle(path)
    except UnpickleError as e:
        raise DatasetError(f"{e}; expected {what}") from None


class _HasImage(Protocol):
    @property
    def image_path(self) -> Path: ...


S = TypeVar("S", bound=_HasImage)


class ImageDataset(Dataset[S]):
    """A map-style dataset of samples whose image files are checked, all up front or on access.

    Samples are dataclasses: give a DataLoader a ``collate_fn`` (e.g. ``list``) that handles them.

    Args:
        samples: the samples, each with an ``image_path``.
        source: the annotation file the samples come from (named in errors).
        check_images: ``"eager"`` checks every image exists now; ``"lazy"`` on ``__getitem__``.
    """

    def __init__(self, samples: list[S], source: Path, check_images: ImageCheck) -> None:
        if check_images not in ("eager", "lazy"):
            raise OFAValueError(f"check_images must be 'eager' or 'lazy', got {check_images!r}")
        self.samples = samples
        self.source = source
        self.lazy = check_images == "lazy"
        if not self.lazy:
            for p in dict.fromkeys(s.image_path for s in samples):
                self._check_image(p)

    def _check_image(self, path: Path) -> None:
        if not path.is_file():
            raise DatasetError(f"{path}: image not found (referenced by {self.source})")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> S:
        sample = self.samples[index]
        if self.lazy:
            self._check_image(sample.image_path)
        return sample

    def __iter__(self) -> Iterator[S]:
        return (self[i] for i in range(len(self)))
