"""The errors a user causes (bad input, a missing file, an unknown name, being offline).

The CLI and the service show an :class:`OFAError` as one line; anything else is a bug and keeps its
traceback. Subclasses also derive from the builtin they refine (``ValueError``,
``FileNotFoundError``, ...) so existing ``except`` clauses keep working.
"""

from __future__ import annotations


class OFAError(Exception):
    """An error the user can fix; its message says what is wrong and what to do."""


class OFAValueError(OFAError, ValueError):
    """A bad option, field or input value."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions the CLI shows as one line (imported late: this module imports nothing)."""
    from .checkpoints import CheckpointError
    from .data.common import DatasetError
    from .images import ImageError
    from .zoo import DownloadError

    return (
        OFAError,
        CheckpointError,
        DatasetError,
        DownloadError,
        ImageError,
        ValueError,
        FileNotFoundError,
        PermissionError,
        RuntimeError,
    )
