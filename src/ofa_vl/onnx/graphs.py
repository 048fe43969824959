"""The two networks an ONNX export holds, as ``nn.Module`` wrappers of the OFA they are cut from.

``EncoderGraph`` is ``model.encode`` plus what :meth:`~ofa_vl.model.decoder.Decoder.init_state`
computes once per image: every decoder layer's cross-attention keys/values and the image side of
the decoder's cross-attention position bias. ``DecoderStepGraph`` is one
:meth:`~ofa_vl.model.decoder.Decoder.step` with the self-attention cache passed in and out
(optimum's "decoder with past" pattern): the position biases of the step's queries are computed
from its positions, the slices of what ``init_state`` tabulates up to ``max_len``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model import OFA
from ..model.decoder import Decoder
from ..model.encoder import padding_bias, rel_bias
from ..model.layers import KVCache
from ..model.positions import token_buckets

FORMAT = "ofa-vl-onnx"  # the graphs' metadata "format"; "config" holds the OFAConfig JSON
ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"


@dataclass(frozen=True)
class GraphNames:
    """The inputs and outputs of both graphs (``k``/``v`` of each decoder layer, in order)."""

    layers: int

    def per_layer(self, prefix: str) -> list[str]:
        return [f"{prefix}_{kv}.{i}" for i in range(self.layers) for kv in "kv"]

    @property
    def encoder_inputs(self) -> list[str]:
        return ["input_ids", "images", "images_mask"]

    @property
    def encoder_outputs(self) -> list[str]:
        return [
            "last_hidden_state", "padding_mask", "position_embedding", "cross_pos_k",
            *self.per_layer("cross"),
        ]  # fmt: skip

    @property
    def decoder_inputs(self) -> list[str]:
        return [
            "tokens", "padding_mask", "cross_pos_k", *self.per_layer("cross"),
            *self.per_layer("past"),
        ]  # fmt: skip

    @property
    def decoder_outputs(self) -> list[str]:
        return ["logits", *self.per_layer("present")]


class GrowingCache(KVCache):
    """A :class:`KVCache` whose buffers are the past keys/values, grown by each layer's new ones
    (what a graph with the cache as inputs and outputs computes)."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor]):
        self.k, self.v = list(k), list(v)
        self.length = k[0].shape[2]

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H, T', D) new keys/values after the past (N, H, P, D); return all of them."""
        self.k[layer] = torch.cat([self.k[layer], k], 2)
        self.v[layer] = torch.cat([self.v[layer], v], 2)
        return self.k[layer], self.v[layer]


class EncoderGraph(nn.Module):
    """(input_ids (B, L), images (B, 3, S, S), images_mask (B,)) -> the encoder's output (states,
    padding mask, positions), the cross position keys (B, H, S', D) and each decoder layer's
    cross keys and values."""

    def __init__(self, model: OFA):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, images: torch.Tensor, images_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        enc = self.model.encode(input_ids, images, images_mask)
        dec = self.model.decoder
        pos_k = dec._heads(dec.cross_pos_k_linear(enc.position_embedding))  # (B, H, S', D)
        cross = [t for kv in dec.cross_kv(enc) for t in kv]  # k0, v0, k1, v1, ...
        return (enc.last_hidden_state, enc.padding_mask, enc.position_embedding, pos_k, *cross)


class DecoderStepGraph(nn.Module):
    """One decoding step of text rows: (N, T') new tokens after P cached ones -> (N, T', V)
    logits and the grown (N, H, P + T', D) caches. N = B * G rows, G per image."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def biases(
        self, t0: int, T: int, pos_k: torch.Tensor, padding_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Rows ``t0 .. t0+T-1`` of :meth:`Decoder._biases`'s text biases: per-layer self bias
        (1, H, T, t0+T), causal included, and the cross bias (B, H, T, S')."""
        dec = self.decoder
        L, dev = t0 + T, pos_k.device
        pos = dec._positions(L, False, dev)  # (1, L, C)
        q = dec._heads(dec.self_pos_q_linear(pos[:, t0:])) * dec.pos_scaling
        abs_self = q @ dec._heads(dec.self_pos_k_linear(pos)).transpose(2, 3)  # (1, H, T, L)
        keys = torch.arange(L, device=dev)
        buckets = token_buckets(dec.token_bucket, keys[t0:], keys, dec.cfg.max_positions)
        causal = torch.full((T, L), float("-inf"), device=dev).triu(t0 + 1)
        selfs = [abs_self + rel_bias(t, buckets) + causal for t in dec.token_rel_pos_table_list]
        q = dec._heads(dec.cross_pos_q_linear(pos[:, t0:])) * dec.pos_scaling  # (1, H, T, D)
        cross = q @ pos_k.transpose(2, 3) + padding_bias(padding_mask, q.dtype)
        return selfs, cross

    def forward(
        self,
        tokens: torch.Tensor,
        padding_mask: torch.Tensor,
        pos_k: torch.Tensor,
        cross: list[torch.Tensor],
        past: list[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        """``cross``: k0, v0, k1, ... (B, H, S', D); ``past``: the same order, (N, H, P, D)."""
        dec = self.decoder
        N, T = tokens.shape
        B = pos_k.shape[0]
        cache = GrowingCache(past[0::2], past[1::2])
        t0 = cache.length
        self_bias, cross_bias = self.biases(t0, T, pos_k, padding_mask)
        # the G rows of an image are one (G * T')-query block of cross-attention (DecoderLayer)
        cross_bias = cross_bias.repeat(1, 1, N // B, 1)
        x = dec._embed(tokens, None, t0)
        cross_kv = list(zip(cross[0::2], cross[1::2]))
        logits = dec.project(dec._run_layers(x, self_bias, cross_kv, cross_bias, cache))
        present = [t for kv in zip(cache.k, cache.v) for t in kv]
        return (logits, *present)
