"""``Overlay``: the options one layer of settings sets over a task's defaults, typed.

A model card and a model folder's ``pipeline.json`` each set a few fields of the task's
:class:`~ofa_vl.preprocess.PreprocessConfig` and :class:`~ofa_vl.generation.GenerationConfig`
(timm's ``pretrained_cfg`` and HF's saved ``GenerationConfig`` diff play the same part). An overlay
holds those fields inside the config itself, checked and typed by its ``replace``, and which of
them are set: the rest stay the task's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Overlay"]

C = TypeVar("C", bound="Config")


class Config(Protocol):
    """A frozen config: ``replace`` checks names and types the values; ``to_dict`` is JSON-ready."""

    def replace(self: C, **options: Any) -> C: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Overlay(Generic[C]):
    """The fields ``keys`` of ``config`` (its other fields are its defaults, unused)."""

    config: C
    keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config: C, options: Mapping[str, Any] | None = None) -> Overlay[C]:
        """``options`` (JSON or typed values) over ``config``; an unknown name is one error."""
        options = dict(options or {})
        return cls(config.replace(**options), frozenset(options))

    @classmethod
    def select(cls, config: C, keys: Iterable[str]) -> Overlay[C]:
        """The fields ``keys`` of a whole ``config``."""
        return cls(config, frozenset(keys))

    def values(self) -> dict[str, Any]:
        """The fields set, typed (as task options or ``replace`` keywords)."""
        return {k: getattr(self.config, k) for k in sorted(self.keys)}

    def over(self, base: C) -> C:
        """``base`` with this overlay's fields."""
        return base.replace(**self.values())

    def then(self, other: Overlay[C]) -> Overlay[C]:
        """This overlay, then ``other`` over it."""
        return Overlay(other.over(self.config), self.keys | other.keys)

    def to_dict(self) -> dict[str, Any]:
        """The fields set, JSON-ready."""
        full = self.config.to_dict()
        return {k: full[k] for k in sorted(self.keys)}

    def __bool__(self) -> bool:
        return bool(self.keys)
