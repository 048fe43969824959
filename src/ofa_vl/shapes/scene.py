"""The shapes world's scenes: objects with their boxes on a background (plain frozen data; drawn
by :mod:`ofa_vl.shapes.world`, described by :mod:`ofa_vl.shapes.text`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Background", "Scene", "ShapeObject", "as_box", "as_rgb"]


@dataclass(frozen=True)
class ShapeObject:
    """One shape: its attributes and its box ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive)."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Background:
    """A light colour plus ``gradient`` added linearly along ``direction``, plus Gaussian noise."""

    colour: tuple[int, int, int]
    gradient: tuple[int, int, int]
    direction: str
    noise: float
    seed: int


@dataclass(frozen=True)
class Scene:
    """A square image of ``image_size`` pixels and the shapes on it."""

    image_size: int
    objects: tuple[ShapeObject, ...]
    background: Background

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able description (objects also carry their centre)."""
        data = dataclasses.asdict(self)
        for obj, entry in zip(self.objects, data["objects"], strict=True):
            entry["centre"] = list(obj.centre)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_dict` (extra keys such as ids are ignored)."""
        bg = data["background"]
        return cls(
            image_size=data["image_size"],
            objects=tuple(
                ShapeObject(o["shape"], o["colour"], o["size"], as_box(o["box"]))
                for o in data["objects"]
            ),
            background=Background(
                as_rgb(bg["colour"]),
                as_rgb(bg["gradient"]),
                bg["direction"],
                bg["noise"],
                bg["seed"],
            ),
        )


def as_rgb(values: Iterable[Any]) -> tuple[int, int, int]:
    """Three ints (JSON lists, numpy draws) as an RGB tuple."""
    r, g, b = (int(v) for v in values)
    return r, g, b


def as_box(values: Iterable[Any]) -> tuple[int, int, int, int]:
    """Four ints as a box ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = (int(v) for v in values)
    return x0, y0, x1, y1
