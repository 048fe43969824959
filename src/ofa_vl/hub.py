"""Resolve a local directory or a Hugging Face hub repository id to local files.

Hub files go through ``huggingface_hub.hf_hub_download`` and its cache (nothing is downloaded
twice). ``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read at call
time, not frozen at import time as ``huggingface_hub.constants`` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .errors import OFAFileNotFoundError, OFANotADirectoryError, OFARuntimeError

__all__ = ["OFAHubError", "is_hub_id", "resolve_files"]

# `org/name` as on the hub; a string that is not an existing path and matches this is a hub id.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class OFAHubError(OFARuntimeError):
    """A hub id could not be resolved: offline, hub unreachable, or repository / files not found."""


def is_hub_id(name: str | os.PathLike[str]) -> bool:
    """True when ``name`` is not an existing path and looks like a hub id (``org/name``)."""
    return not Path(name).exists() and _HUB_ID.fullmatch(str(name)) is not None


def resolve_files(
    name_or_path: str | os.PathLike[str],
    choices: Sequence[Sequence[str]],
    *,
    optional: Sequence[str] = (),
    revision: str | None = None,
) -> dict[str, Path]:
    """Local paths of the first complete set of files in ``choices``, plus the ``optional`` ones found.

    Args:
        name_or_path: a local directory, or a hub id such as ``"OFA-Sys/OFA-base"``.
        choices: alternative file sets in order of preference, e.g.
            ``[("vocab.json", "merges.txt"), ("tokenizer.json",)]``.
        optional: files returned when present, silently skipped when not.
        revision: hub branch, tag or commit (hub ids only).

    Raises:
        FileNotFoundError: a directory lacks every file set, or the name is neither a directory
            nor a hub id.
        NotADirectoryError: the name is an existing file.
        OFAHubError: a hub id could not be resolved.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return _resolve_local(path, choices, optional)
    if path.exists():
        raise OFANotADirectoryError(
            f"{path} is a file; expected a directory holding {_describe(choices)}"
        )
    if is_hub_id(name_or_path):
        return _resolve_hub(str(name_or_path), choices, optional, revision)
    raise OFAFileNotFoundError(
        f"{str(name_or_path)!r} is neither an existing directory nor a hub id like 'OFA-Sys/OFA-base'"
    )


def _describe(choices: Sequence[Sequence[str]]) -> str:
    return " or ".join(" + ".join(files) for files in choices)


def _resolve_local(
    directory: Path, choices: Sequence[Sequence[str]], optional: Sequence[str]
) -> dict[str, Path]:
    for files in choices:
        if all((directory / f).is_file() for f in files):
            found = {f: directory / f for f in files}
            found.update({f: directory / f for f in optional if (directory / f).is_file()})
            return found
    raise OFAFileNotFoundError(f"directory {directory} holds none of: {_describe(choices)}")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _resolve_hub(
    repo_id: str, choices: Sequence[Sequence[str]], optional: Sequence[str], revision: str | None
) -> dict[str, Path]:
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    cache_dir: str | None = os.environ.get("HF_HUB_CACHE") or None
    if cache_dir is None and os.environ.get("HF_HOME"):
        cache_dir = os.path.join(os.environ["HF_HOME"], "hub")
    offline = _env_true("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE
    unreachable = (
        "offline mode (HF_HUB_OFFLINE) is on and they are not in the cache" if offline else None
    )

    def fail(reason: str) -> OFAHubError:
        where = endpoint or constants.ENDPOINT
        return OFAHubError(
            f"could not get {_describe(choices)} for {repo_id!r} from the Hugging Face hub ({where}): "
            f"{reason}; pass a local directory holding {_describe(choices)} instead"
        )

    def fetch(filename: str) -> Path | None:
        """The file's local path, or None when the repository lacks it or it cannot be reached."""
        nonlocal unreachable
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if cached is not None and not isinstance(cached, str):
            return None  # the cache already records that the repository lacks this file
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=cache_dir,
                    endpoint=endpoint,
                    local_files_only=unreachable is not None,
                )
            )
        except RemoteEntryNotFoundError:
            return None
        except LocalEntryNotFoundError:
            # Not cached and the hub cannot be asked: the other files can only come from the cache.
            unreachable = unreachable or "the hub is unreachable and they are not in the cache"
            return None
        except RepositoryNotFoundError as err:
            raise fail("repository not found (or private / gated)") from err
        except RevisionNotFoundError as err:
            raise fail(f"revision {revision!r} not found") from err
        except HfHubHTTPError as err:
            raise fail(f"HTTP {err.response.status_code}") from err
        except (OSError, ValueError) as err:
            raise fail(str(err).splitlines()[0] if str(err) else type(err).__name__) from err

    for files in choices:
        paths = {}
        for filename in files:
            local = fetch(filename)
            if local is None:
                break
            paths[filename] = local
        else:
            for filename in optional:
                local = fetch(filename)
                if local is not None:
                    paths[filename] = local
            return paths
    raise fail(unreachable or "the repository has none of these files")
