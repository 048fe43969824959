"""NormFormer encoder and decoder layers (pre-norm, mid LayerNorms after attention and in the FFN).

OFA:models/ofa/unify_transformer_layer.py with ``--scale-attn --scale-fc --scale-heads``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import OFAConfig
from .attention import Attention
from .linear import linear
from .resnet import drop_path


class KVCache:
    """Self-attention keys/values of every decoder layer, preallocated to ``max_len`` steps.

    Zeros, not empty: a compiled step (:class:`SlotCache`) attends over all ``max_len`` slots,
    and a masked slot's weight 0 times uninitialised memory (NaN) would be NaN.
    """

    def __init__(self, num_layers: int, shape: tuple[int, int, int, int], like: torch.Tensor):
        n, h, t, d = shape  # (N, H, max_len, D)
        self.k = [like.new_zeros(n, h, t, d) for _ in range(num_layers)]
        self.v = [like.new_zeros(n, h, t, d) for _ in range(num_layers)]
        self.length = 0

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (N, H, T, D) new keys/values after the cached ones; return all of them."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (beam search survivors), for the filled part only; fewer rows
        (sentences that are done) shrink the buffers."""
        t = self.length
        if index.numel() < self.k[0].shape[0]:
            self.k = [buf.index_select(0, index) for buf in self.k]
            self.v = [buf.index_select(0, index) for buf in self.v]
            return
        for buf in (*self.k, *self.v):
            buf[:, :, :t] = buf[:, :, :t].index_select(0, index)


class SlotCache:
    """A :class:`KVCache`'s buffers as one compiled decoding step sees them: the step's keys and
    values go to slot ``pos`` (a (1,) tensor, so the traced graph is the same at every step) and
    attention reads all ``max_len`` slots; the causal bias hides the slots not written yet."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], pos: torch.Tensor):
        self.k, self.v, self.pos = k, v, pos

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (N, H, 1, D) keys/values at slot ``pos``; return the (N, H, max_len, D) buffers."""
        self.k[layer].index_copy_(2, self.pos, k)
        self.v[layer].index_copy_(2, self.pos, v)
        return self.k[layer], self.v[layer]


class StreamNorm(nn.LayerNorm):
    """A LayerNorm at the residual stream's edge, which stays fp32 when the weights are cast to
    bf16/fp16 (``model/precision.py``, measured there): it normalises in its own (fp32) weights'
    dtype and returns that dtype when ``into_stream`` (the stream's entry, the logits' input),
    else ``compute_dtype`` (the input of a sublayer). In an fp32 model it is a plain LayerNorm."""

    compute_dtype: torch.dtype | None = None  # set by precision.cast_weights

    def __init__(self, dim: int, into_stream: bool = False):
        super().__init__(dim)
        self.into_stream = into_stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        y = F.layer_norm(x.to(w.dtype), self.normalized_shape, w, self.bias, self.eps)
        return y if self.into_stream or self.compute_dtype is None else y.to(self.compute_dtype)


def _attention(cfg: OFAConfig) -> tuple[Attention, StreamNorm, nn.LayerNorm]:
    """An attention sublayer: the attention, the LayerNorm before it, the one after it
    (NormFormer's mid LayerNorm)."""
    dim = cfg.embed_dim
    attn = Attention(dim, cfg.num_heads, cfg.attn_scale_factor, cfg.attention_dropout)
    return attn, StreamNorm(dim), nn.LayerNorm(dim)


class _Block(nn.Module):
    """Shared residual/FFN plumbing of both layer kinds."""

    fc1: nn.Linear
    fc2: nn.Linear
    ffn_mid_ln: nn.LayerNorm
    ffn_ln: StreamNorm

    def _init_ffn(self, cfg: OFAConfig, drop_path_rate: float) -> None:
        self.ffn_ln = StreamNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn)
        self.fc2 = nn.Linear(cfg.ffn, cfg.embed_dim)
        self.ffn_mid_ln = nn.LayerNorm(cfg.ffn)
        self.dropout = cfg.dropout
        self.act_dropout = cfg.activation_dropout
        self.drop_path_rate = drop_path_rate

    def _residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = F.dropout(y, self.dropout, self.training)
        return x + drop_path(y, self.drop_path_rate, self.training)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(linear(self.fc1, self.ffn_ln(x)))
        y = F.dropout(y, self.act_dropout, self.training)
        return self._residual(x, linear(self.fc2, self.ffn_mid_ln(y)))


class EncoderLayer(_Block):
    def __init__(self, cfg: OFAConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.attn, self.attn_ln, self.attn_mid_ln = _attention(cfg)
        self._init_ffn(cfg, drop_path_rate)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, query_order: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.attn(self.attn_ln(x), bias=bias, query_order=query_order)
        x = self._residual(x, self.attn_mid_ln(h))
        return self._ffn(x)


class DecoderLayer(_Block):
    def __init__(self, cfg: OFAConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.self_attn, self.self_attn_ln, self.self_attn_mid_ln = _attention(cfg)
        self.cross_attn, self.cross_attn_ln, self.cross_attn_mid_ln = _attention(cfg)
        self._init_ffn(cfg, drop_path_rate)

    def forward(
        self,
        x: torch.Tensor,
        self_bias: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        cross_bias: torch.Tensor,
        cache: KVCache | SlotCache | None = None,
        index: int = 0,
    ) -> torch.Tensor:
        """x (N, T, C) with N = B * G rows (G beams per image, in image-major order).

        ``cross_kv`` (B, H, S, D) is shared by the G rows of an image: for cross-attention the
        rows are viewed as (B, G * T, C) queries, so the keys/values are never copied per beam.
        ``cache`` holds this layer's past self-attention keys/values (layer ``index``).
        """
        h = self.self_attn_ln(x)
        kv = None
        if cache is not None:
            kv = cache.append(index, *self.self_attn.project_kv(h))
        x = self._residual(x, self.self_attn_mid_ln(self.self_attn(h, kv=kv, bias=self_bias)))
        N, T, C = x.shape
        B = cross_kv[0].shape[0]
        h = self.cross_attn(self.cross_attn_ln(x).reshape(B, -1, C), kv=cross_kv, bias=cross_bias)
        x = self._residual(x, self.cross_attn_mid_ln(h.reshape(N, T, C)))
        return self._ffn(x)
