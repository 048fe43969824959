"""``PreprocessConfig``: everything between a user's input and the model's tensors, in one object.

A task owns it (``Task.preprocessing``: its image size, interpolation, mean / std and the text
normalisation of each field); a model card's task options, a model folder's ``pipeline.json`` and
the caller's options overlay those fields when the task is built. :meth:`OFAPipeline.preprocess
<ofa_vl.api.OFAPipeline.preprocess>`, ``ofa test``, ``ofa serve`` and training all turn images
into tensors through :meth:`PreprocessConfig.image` (open_clip's ``PreprocessCfg``, timm's
``pretrained_cfg`` play the same part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

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
