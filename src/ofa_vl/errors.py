"""The errors a user causes (bad input, a missing file, an unknown name, being offline).

The CLI and the service show an :class:`OFAError` as one line; anything else is a bug and keeps its
traceback. Subclasses also derive from the builtin they refine (``ValueError``,
``FileNotFoundError``, ...) so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import errno

# OS errors the user's environment causes (full or read-only disk, no permission): one line too.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)


class OFAError(Exception):
    """An error the user can fix; its message says what is wrong and what to do."""


class OFAValueError(OFAError, ValueError):
    """A bad option, field or input value."""


class OFAFileNotFoundError(OFAError, FileNotFoundError):
    """A path the user gave that does not exist."""


class OFANotADirectoryError(OFAError, NotADirectoryError):
    """A file given where a folder is wanted (a tokenizer folder, a run folder)."""


class OFAFileExistsError(OFAError, FileExistsError):
    """An output path that is taken (by a file where a folder is wanted, by a running job)."""


class OFARuntimeError(OFAError, RuntimeError):
    """The environment cannot do what was asked (no CUDA device, a host unreachable, a lock held)."""


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (shown in one line) rather than a bug (a traceback)."""
    return isinstance(err, OFAError) or (
        isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS
    )


def describe(err: BaseException) -> str:
    """One line for a user error; an OS error names its file (``[Errno 28] ...: 'path'``)."""
    if isinstance(err, OSError) and not isinstance(err, OFAError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}"
    return str(err).strip().replace("\n", " ")
