"""The exceptions that mean "bad input" (one line to the user), as opposed to bugs."""

from __future__ import annotations

from .checkpoints import CheckpointError
from .data.common import DatasetError
from .images import ImageError
from .zoo import DownloadError

USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    DatasetError,
    DownloadError,
    ImageError,
    ValueError,
    FileNotFoundError,
    PermissionError,
    RuntimeError,
)
