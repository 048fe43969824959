"""Run folders shared by ``ofa test`` and ``ofa train``: one run at a time, files whole or absent,
and a fingerprint of the weights a run used.

* :class:`RunLock` holds an exclusive ``fcntl`` lock on ``FOLDER/.lock`` while a run writes there;
  a second run on the same folder fails at once, naming the holder. The kernel drops the lock when
  the process dies, so a killed run never leaves a stale lock.
* :func:`write_atomic` / :func:`publish` write to a temporary name and rename: a kill or a full disk
  leaves the previous file or none, never half of one.
* :func:`weights_fingerprint` is the sha256 of a weights file, cached by path, size and mtime.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from .errors import OFANotADirectoryError, OFARuntimeError

LOCK_FILE = ".lock"
FINGERPRINTS = "fingerprints.json"  # in the cache folder: path -> size, mtime, sha256


def cache_dir() -> Path:
    """``$OFA_VL_HOME`` or ``~/.cache/ofa_vl``: downloads and the weights' fingerprints."""
    return Path(os.environ.get("OFA_VL_HOME", Path.home() / ".cache" / "ofa_vl"))


def run_folder(path: Path, option: str = "--out") -> Path:
    """``path`` created as a folder; a file there is a one-line error."""
    if path.exists() and not path.is_dir():
        raise OFANotADirectoryError(f"{option} {path} is a file; give a folder for the run")
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunLock:
    """Exclusive lock on a run folder for the duration of a ``with`` block."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = folder, what
        self._file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        run_folder(self.folder)
        f = (self.folder / LOCK_FILE).open("a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise OFARuntimeError(
                f"{self.folder} is in use by another {self.what} ({holder}); wait for it to "
                "finish or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def fileno(self) -> int:
        """The locked file's descriptor: a forked worker closes its copy (``os.close``), else the
        lock outlives a killed holder until that worker exits too."""
        assert self._file is not None, "not held"
        return self._file.fileno()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def publish(tmp: Path, dest: Path) -> None:
    """Rename a finished temporary file onto ``dest`` with the umask's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text``, or its pieces as they come (never all held), to ``path`` whole or not at
    all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for piece in [text] if isinstance(text, str) else text:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of a weights file; rehashed only when its path, size or mtime change."""
    path = path.resolve()
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    store = cache_dir() / FINGERPRINTS
    try:
        cache = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    hit = cache.get(str(path))
    if isinstance(hit, dict) and all(hit.get(k) == v for k, v in key.items()) and "sha256" in hit:
        return f"sha256:{hit['sha256']}"
    found = sha256_file(path)
    cache[str(path)] = {**key, "sha256": found}
    try:  # a read-only cache only costs a rehash next time
        store.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(store, json.dumps(cache, indent=1) + "\n")
    except OSError:
        pass
    return f"sha256:{found}"
