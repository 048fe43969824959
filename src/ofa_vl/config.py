"""OFA architecture configuration and the size presets of the official release.

Sizes follow ``OFA:models/ofa/ofa.py`` (``ofa_tiny`` .. ``ofa_huge``); every other field defaults to
the values all released checkpoints were trained with (pre-norm NormFormer, decoupled positions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import OFAValueError

RESNET_LAYERS: dict[int, tuple[int, int, int]] = {
    50: (3, 4, 6),
    101: (3, 4, 23),
    152: (3, 8, 36),
}


@dataclass
class OFAConfig:
    """Hyper-parameters of one OFA encoder-decoder."""

    embed_dim: int = 768
    encoder_layers: int = 6
    decoder_layers: int = 6
    num_heads: int = 12
    ffn_dim: int | None = None  # default: 4 * embed_dim
    resnet_depth: int = 101
    resnet_layers: tuple[int, ...] | None = None  # overrides resnet_depth (bundled small models)
    resnet_width: int = 64  # channels of the stem; the 3rd stage outputs 16 * width
    vocab_size: int = 59457
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    max_positions: int = 1024
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    attn_scale_factor: float = 2.0
    code_image_size: int = 128
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    # OFA's --entangle-position-embedding: also add the position embeddings to the token/patch
    # embeddings (every release trains with --disable-entangle, i.e. False)
    entangle_position_embedding: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn(self) -> int:
        return self.ffn_dim or 4 * self.embed_dim

    @property
    def resnet_blocks(self) -> tuple[int, ...]:
        if self.resnet_layers is not None:
            return tuple(self.resnet_layers)
        if self.resnet_depth not in RESNET_LAYERS:
            raise OFAValueError(
                f"resnet_depth must be one of {sorted(RESNET_LAYERS)}, got {self.resnet_depth}"
            )
        return RESNET_LAYERS[self.resnet_depth]

    @property
    def image_channels(self) -> int:
        """Channels out of the 3-stage ResNet (1024 for the standard width 64)."""
        return self.resnet_width * 16

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["resnet_layers"] is not None:
            d["resnet_layers"] = list(d["resnet_layers"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OFAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OFAValueError(f"unknown OFAConfig fields: {sorted(unknown)}")
        d = dict(d)
        if d.get("resnet_layers") is not None:
            d["resnet_layers"] = tuple(d["resnet_layers"])
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> OFAConfig:
        if name not in PRESETS:
            raise OFAValueError(f"unknown OFA preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, OFAConfig] = {
    "tiny": OFAConfig(
        embed_dim=256, encoder_layers=4, decoder_layers=4, num_heads=4, resnet_depth=50
    ),
    "medium": OFAConfig(
        embed_dim=512, encoder_layers=4, decoder_layers=4, num_heads=8, resnet_depth=101
    ),
    "base": OFAConfig(),
    "large": OFAConfig(
        embed_dim=1024, encoder_layers=12, decoder_layers=12, num_heads=16, resnet_depth=152
    ),
    "huge": OFAConfig(
        embed_dim=1280, encoder_layers=24, decoder_layers=12, num_heads=16, resnet_depth=152
    ),
    # the bundled ofa-tiny_shapes model (ofa_vl/assets): word vocabulary, small ResNet, 128 px
    "shapes": OFAConfig(
        embed_dim=192,
        encoder_layers=3,
        decoder_layers=3,
        num_heads=4,
        resnet_layers=(1, 1, 1),
        resnet_width=16,
        vocab_size=1057,
        entangle_position_embedding=True,  # a small model from scratch localises far faster
    ),
}
