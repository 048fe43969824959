"""``PreprocessConfig``: everything between a user's input and the model's tensors, in one object.

A task owns it (``Task.preprocessing``: its image size, interpolation, mean / std and the text
normalisation of each field); a model card's task options, a model folder's ``pipeline.json`` and
the caller's options overlay those fields when the task is built. :meth:`OFAPipeline.preprocess
<ofa_vl.api.OFAPipeline.preprocess>`, ``ofa test``, ``ofa serve`` and training all turn images
into tensors through :meth:`PreprocessConfig.image` (open_clip's ``PreprocessCfg``, timm's
``pretrained_cfg`` play the same part).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import OFAValueError
from .images import (
    OFA_MEAN,
    OFA_STD,
    ImageInfo,
    ImageSource,
    Interpolation,
    load_resized,
    normalize,
)
from .text import TextNorm, normalize_text

__all__ = ["PreprocessConfig"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How one model reads its inputs."""

    image_size: int = 480
    interpolation: Interpolation = Interpolation.BILINEAR
    mean: tuple[float, ...] = OFA_MEAN  # in [0, 1] units: x' = (x - 255 mean) / (255 std)
    std: tuple[float, ...] = OFA_STD
    text_norm: Mapping[str, TextNorm] = field(default_factory=dict)  # field -> normalisation

    def replace(self, **options: Any) -> PreprocessConfig:
        """This config with ``options`` (JSON values parsed: names, lists); an unknown name is
        one :class:`OFAValueError`."""
        names = [f.name for f in dataclasses.fields(self)]
        if unknown := ", ".join(sorted(set(options) - set(names))):
            raise OFAValueError(
                f"unknown preprocessing option {unknown}; valid ones: {', '.join(names)}"
            )
        if "interpolation" in options:
            options["interpolation"] = Interpolation.parse(options["interpolation"])
        for key in ("mean", "std"):
            if key in options:
                options[key] = tuple(float(v) for v in options[key])
        if "text_norm" in options:
            options["text_norm"] = {k: TextNorm.parse(v) for k, v in options["text_norm"].items()}
        return dataclasses.replace(self, **options)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (``pipeline.json``'s spelling)."""
        return {
            "image_size": self.image_size,
            "interpolation": self.interpolation.value,
            "mean": list(self.mean),
            "std": list(self.std),
            "text_norm": {k: v.value for k, v in self.text_norm.items()},
        }

    def resized(self, image: ImageSource) -> tuple[torch.Tensor, ImageInfo]:
        """Load and resize: (3, S, S) uint8 pixels (what training caches) and the resize info."""
        return load_resized(image, self.image_size, self.interpolation)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, S, S) uint8 -> float32 ``(x - mean) / std``."""
        return normalize(pixels, self.mean, self.std)

    def image(self, image: ImageSource) -> tuple[torch.Tensor, ImageInfo]:
        """One image as the encoder reads it: (3, S, S) float32 and its resize info."""
        pixels, info = self.resized(image)
        return self.normalize(pixels), info

    def images(self, images: Sequence[ImageSource]) -> tuple[torch.Tensor, list[ImageInfo]]:
        """Several images: a (B, 3, S, S) tensor and one :class:`ImageInfo` each."""
        done = [self.image(img) for img in images]
        return torch.stack([t for t, _ in done]), [info for _, info in done]

    def text(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``fields`` with each text normalised as :attr:`text_norm` says."""
        out = dict(fields)
        for key, how in self.text_norm.items():
            if isinstance(out.get(key), str):
                out[key] = normalize_text(out[key], how)
        return out
