"""OFA encoder: image patches from the ResNet, then text tokens, through NormFormer layers.

OFA:models/ofa/unify_transformer.py ``TransformerEncoder``: token/type embeddings with their
LayerNorms, absolute positions *decoupled* into an attention bias (``pos_q_linear`` /
``pos_k_linear``), plus per-layer relative-position tables for text (log buckets) and for image
patches (2-D buckets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import OFAConfig
from ..errors import OFAValueError
from .attention import mask_dtype
from .layers import EncoderLayer, StreamNorm
from .positions import image_buckets, image_position_ids, token_bucket_table, token_buckets
from .resnet import ResNet3, linear_rates


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, P + L, C): image patches first, then text
    padding_mask: torch.Tensor  # (B, P + L), True = padding
    position_embedding: torch.Tensor  # (B, P + L, C), after pos_ln / image_pos_ln

    def index_select(self, index: torch.Tensor) -> EncoderOutput:
        """Rows ``index`` of every field (e.g. to score many candidates per image)."""
        return EncoderOutput(
            self.last_hidden_state.index_select(0, index),
            self.padding_mask.index_select(0, index),
            self.position_embedding.index_select(0, index),
        )


def rel_bias(table: nn.Module, buckets: torch.Tensor) -> torch.Tensor:
    """(..., Lq, Lk) bucket ids -> (..., H, Lq, Lk) bias from a (num_buckets, H) table."""
    return table(buckets).movedim(-1, -3)


def image_reversed(patches: int, length: int, device: torch.device) -> torch.Tensor:
    """(L,) the order the encoder's queries attend in: the image patches last to first, then the
    text (its own inverse; ``Encoder._layer_bias`` says why)."""
    return torch.cat([torch.arange(patches - 1, -1, -1), torch.arange(patches, length)]).to(device)


def padding_bias(padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) True = pad -> (B, 1, 1, L) additive mask."""
    zeros = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return zeros.masked_fill(padding_mask, float("-inf"))[:, None, None, :]


class PositionalStack(nn.Module):
    """What encoder and decoder share: position embeddings, relative tables, layers, final LN."""

    token_bucket: torch.Tensor
    cfg: OFAConfig
    gradient_checkpointing = False  # OFA.set_gradient_checkpointing

    def _layer(self, layer: nn.Module, *args: Any) -> torch.Tensor:
        """``layer(*args)``; recomputed in the backward pass (activation checkpointing) when
        enabled and gradients are being recorded in training."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # the RNG state is restored for the recomputation: the same dropout masks
            return cast(torch.Tensor, checkpoint(layer, *args, use_reentrant=False))
        return cast(torch.Tensor, layer(*args))

    def _init_positions(self, cfg: OFAConfig) -> None:
        dim = cfg.embed_dim
        self.embed_positions = nn.Embedding(cfg.max_positions + 2, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (cfg.head_dim * cfg.attn_scale_factor) ** -0.5

    def _init_layers(self, cfg: OFAConfig, layers: list[nn.Module], logits: bool) -> None:
        """The layers, their relative tables and the final LN (of the logits' input: ``logits``)."""
        n_token, n_image = 2 * cfg.token_bucket_size - 1, (2 * cfg.image_bucket_size - 1) ** 2 + 3
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(n_token, cfg.num_heads) for _ in layers
        )
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(n_image, cfg.num_heads) for _ in layers
        )
        self.layers = nn.ModuleList(layers)
        self.final_ln = StreamNorm(cfg.embed_dim, into_stream=logits)
        self.register_buffer(
            "token_bucket",
            token_bucket_table(cfg.token_bucket_size, cfg.max_positions),
            persistent=False,
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.cfg.num_heads, -1).transpose(1, 2)  # (B, H, L, D)


class Encoder(PositionalStack):
    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        super().__init__()
        dim = cfg.embed_dim
        self.cfg = cfg
        self.embed_tokens = embed_tokens
        self.embed_images = ResNet3(cfg.resnet_blocks, cfg.resnet_width)
        self.image_proj = nn.Linear(cfg.image_channels, dim)
        self.embedding_ln = StreamNorm(dim, into_stream=True)
        self.embed_type = nn.Embedding(2, dim)
        self.image_embedding_ln = StreamNorm(dim, into_stream=True)
        self._init_positions(cfg)
        self.pos_q_linear = nn.Linear(dim, dim)
        self.pos_k_linear = nn.Linear(dim, dim)
        rates = linear_rates(cfg.encoder_drop_path_rate, cfg.encoder_layers)
        self._init_layers(cfg, [EncoderLayer(cfg, r) for r in rates], logits=False)

    def embed_image(
        self, images: torch.Tensor, images_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Images (B, 3, H, W) -> patch embeddings, padding mask, positions, the patch grid."""
        feats = self.embed_images(images)  # (B, C', h, w)
        B, _, h, w = feats.shape
        if max(h, w) > self.cfg.image_bucket_size:
            raise OFAValueError(
                f"image of {images.shape[-2]}x{images.shape[-1]} px gives a {h}x{w} patch grid; "
                f"OFA supports at most {self.cfg.image_bucket_size}x{self.cfg.image_bucket_size} "
                f"(images up to {self.cfg.image_bucket_size * 16} px)"
            )
        feats = feats.flatten(2).transpose(1, 2)  # (B, h*w, C')
        ids = image_position_ids(h, w, self.cfg.image_bucket_size).to(images.device)
        x = self.image_proj(feats) + self.embed_type.weight[1]
        raw_pos = self.embed_image_positions(ids)  # (h*w, C)
        if self.cfg.entangle_position_embedding:
            x = x + raw_pos
        x = self.image_embedding_ln(x)
        pos = self.image_pos_ln(raw_pos).expand(B, -1, -1)
        if images_mask is None:
            pad = torch.zeros(B, h * w, dtype=torch.bool, device=images.device)
        else:
            pad = (~images_mask.to(images.device).bool())[:, None].expand(B, h * w)
        return x, pad, pos, (h, w)

    def _layer_bias(
        self,
        i: int,
        abs_bias: torch.Tensor,
        text_buckets: torch.Tensor,
        grid: tuple[int, int] | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Layer ``i``'s (1, H, L, L) attention bias in ``dtype``: ``abs_bias`` (1, H, L, L), fp32,
        plus the layer's relative tables, its rows in the order of :func:`image_reversed` when
        there is an image.

        Image block: a query at patch (r, c) and a key at (r', c') take the 2-D table's entry for
        the offset (r - r', c - c'). With the image queries reversed, query row (q, p) is patch
        (h-1-q, w-1-p), whose entry for key (r', c') sits in the flipped table at (q + r', p + c'):
        a sliding-window view (``unfold``) that one add writes in, where a gather of L² ids per
        layer took 3x as long (fp32, 480 px). Image <-> text: no relative bias. Built in fp32 (a
        strided bf16 add runs 4x slower).
        """
        H, cfg = self.cfg.num_heads, self.cfg
        token = cast(nn.Embedding, self.token_rel_pos_table_list[i]).weight  # (n_token, H)
        text = token[text_buckets].permute(2, 0, 1)  # (H, Lt, Lt)
        absb = abs_bias[0]  # (H, L, L), fp32
        if grid is None:
            return (absb + text)[None].to(dtype)
        h, w = grid
        P, bs = h * w, cfg.image_bucket_size
        image = cast(nn.Embedding, self.image_rel_pos_table_list[i]).weight
        out = absb.clone()
        if torch.compiler.is_exporting():  # the gather keeps the graph's image side free
            ids = image_position_ids(h, w, bs).to(out.device)
            out[:, :P, :P] += image.t()[:, image_buckets(ids.flip(0), ids, bs)]
        else:
            span = 2 * bs - 1  # offsets -(bs-1) .. bs-1 per axis, (dr, dc) at row-major index
            table = image[: span * span].t().reshape(H, span, span)
            table = table[:, bs - h : bs + h - 1, bs - w : bs + w - 1].flip(1, 2)
            window = table.float().contiguous().unfold(1, h, 1).unfold(2, w, 1)  # (H, h, w, h, w)
            out[:, :P, :P].view(H, h, w, h, w).add_(window)
        out[:, P:, P:] += text
        return out[None].to(dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        images_mask: torch.Tensor | None = None,
    ) -> EncoderOutput:
        B, Lt = input_ids.shape
        if Lt > self.cfg.max_positions:
            raise OFAValueError(
                f"input has {Lt} tokens; OFA's encoder takes at most {self.cfg.max_positions}"
            )
        pad = input_ids.eq(self.cfg.pad_token_id)
        text_pos = torch.arange(Lt, device=input_ids.device)
        raw_pos = self.embed_positions(text_pos)  # (Lt, C)
        x = self.embed_tokens(input_ids) + self.embed_type.weight[0]
        if self.cfg.entangle_position_embedding:
            x = x + raw_pos
        x = self.embedding_ln(x)
        pos = self.pos_ln(raw_pos).expand(B, -1, -1)
        grid = None
        if images is not None:
            ix, ipad, ipos, grid = self.embed_image(images, images_mask)
            x, pad, pos = (
                torch.cat([ix, x], 1),
                torch.cat([ipad, pad], 1),
                torch.cat([ipos, pos], 1),
            )
        x = x * (~pad).unsqueeze(-1).to(x.dtype)
        x = nn.functional.dropout(x, self.cfg.dropout, self.training)

        # every sample has the same positions: one (1, H, L, L) bias, broadcast over the batch,
        # its rows in the order the queries attend in
        order = None if grid is None else image_reversed(grid[0] * grid[1], x.shape[1], x.device)
        pos_q = pos[:1] if order is None else pos[:1].index_select(1, order)
        q = self._heads(self.pos_q_linear(pos_q)) * self.pos_scaling
        abs_bias = q @ self._heads(self.pos_k_linear(pos[:1])).transpose(2, 3)  # model dtype
        # an exported graph (ofa_vl.export) always takes the padding bias: no data-dependent branch
        exporting = torch.compiler.is_exporting()
        dtype = mask_dtype(abs_bias.dtype, x.device)
        pad_bias = padding_bias(pad, dtype) if exporting or pad.any() else None
        text_buckets = token_buckets(self.token_bucket, text_pos, text_pos, self.cfg.max_positions)
        abs32 = abs_bias.float()
        for i, layer in enumerate(self.layers):
            bias = self._layer_bias(i, abs32, text_buckets, grid, dtype)
            x = self._layer(layer, x, bias if pad_bias is None else bias + pad_bias, order)
        return EncoderOutput(self.final_ln(x), pad, pos)
