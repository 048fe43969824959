"""Command-line flags generated from a config dataclass, after HF's ``HfArgumentParser``.

A field ``batch_size: int = flag(16, "images per batch")`` is the flag ``--batch-size`` (type from
the annotation, help from ``metadata["help"]``, ``add_argument`` keywords from
``metadata["argparse"]``: ``choices``, ``aliases``, ``action``, ``metavar``, ``nargs``; other
metadata, such as ``GenerationConfig``'s bounds, is not the parser's). The parser's default is
None, so :func:`from_args` passes only the flags given and the dataclass keeps its own defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

__all__ = ["add_dataclass_args", "flag", "from_args", "given"]

T = TypeVar("T")
Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def flag(default: Any = dataclasses.MISSING, help: str = "", **argparse_options: Any) -> Any:
    """A config field and its ``--flag``: help and ``add_argument`` options in its metadata (a
    dict or list ``default``: a fresh copy for each config; no default: a required flag)."""
    metadata = {"help": help, "argparse": argparse_options}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _kind(annotation: Any) -> dict[str, Any]:
    """``add_argument`` keywords of a field's type: ``X | None`` is X; ``str | Path`` is str."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = str if str in members else members[0]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return {"choices": choices, "type": type(choices[0])}
    if origin is list:
        (item,) = typing.get_args(annotation)
        return {"nargs": "+", **_kind(item)}
    if annotation in (int, float, str, Path):
        return {"type": annotation}
    raise TypeError(f"no command-line flag for a field of type {annotation!r}")


def add_dataclass_args(
    parser: Parser,
    cls: type,
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    defaults: Mapping[str, str] | None = None,
    names: Mapping[str, Sequence[str]] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """Add a ``--field-name`` flag for each field of the dataclass ``cls`` (``only`` these,
    less ``exclude``); its value lands in ``args.field_name``. ``defaults`` maps a field to the
    words its help gives as the default (``"the model's"``) where the dataclass's own is not the
    one that applies; ``names``, a field to its flags instead of ``--field-name``; ``helps``, a
    field to its help where the metadata has none."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        options = dict(f.metadata.get("argparse", {}))
        flags = (names or {}).get(f.name) or [f"--{f.name.replace('_', '-')}"]
        flags = [*flags, *options.pop("aliases", ())]
        default = _default(f)
        shown = (defaults or {}).get(f.name, default)
        help = f.metadata.get("help") or (helps or {}).get(f.name) or f.name.replace("_", " ")
        if hints[f.name] is bool:
            action = argparse.BooleanOptionalAction if default is True else "store_true"
            options = {"action": action, **options}
        else:
            options = {**_kind(hints[f.name]), **options}
            if options.get("action") == "append":
                options.pop("nargs", None)
            if shown is not None and not isinstance(shown, list) and "default" not in help:
                help += f" (default: {shown})"
            options["required"] = default is dataclasses.MISSING
            if f.name in (names or {}) and "choices" not in options:  # argparse's from dest
                options.setdefault("metavar", flags[0].lstrip("-").replace("-", "_").upper())
        parser.add_argument(*flags, dest=f.name, default=None, help=help, **options)


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` among the parsed flags that were given (not None)."""
    values = vars(args)
    names = (f.name for f in dataclasses.fields(cls))
    return {k: values[k] for k in names if values.get(k) is not None}


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config of parsed flags: the given ones, the dataclass's defaults for the rest."""
    return cls(**given(cls, args))
