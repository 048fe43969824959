"""Linear layers for the few rows of a decoding step (benchmarks/README.md has the measurements)."""

from __future__ import annotations

import functools

import torch
from torch import nn

SKINNY_ROWS = 16  # up to this many rows (5 beams x 3 images) the weight-stationary product wins
# bf16 weights a decoding step reads (up to 25 images x 5 beams) are prepacked for oneDNN: a copy
# of each, so the encoder's (hundreds of rows, 4 % faster packed) are not: OFA-base +190 MB, not +290
PACKED_ROWS = 128


def weight_stationary(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(W @ xᵀ)ᵀ``: BLAS streams ``W`` once.

    2.6x faster than ``F.linear`` for the 59,457 x 768 output projection on 5 rows and 1.5-2.7x
    for a decoder layer's weights on 5 rows when they come from memory; slower on many rows.
    """
    flat = x.reshape(-1, x.shape[-1]).T  # (C_in, N)
    y = weight @ flat if bias is None else torch.addmm(bias[:, None], weight, flat)
    return y.T.contiguous().view(*x.shape[:-1], -1)


@functools.cache
def onednn_bf16() -> bool:
    """Whether this CPU build runs oneDNN's bf16 kernels (AVX-512 BW/VL/DQ or better)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packed_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor | None:
    """``layer(x)`` for a bf16 weight on the CPU, through oneDNN's prepacked (blocked) copy of the
    weight, made on first use and remade when the weight changes; None where it does not apply
    (another dtype or device, gradients, a traced graph). The same numbers as ``F.linear``, which
    reorders the weight on every call: 1.5-2x faster on 5 rows (issue #30, benchmarks/README.md)."""
    w = layer.weight
    if w.dtype != torch.bfloat16 or w.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and (w.requires_grad or x.requires_grad) or not onednn_bf16():
        return None  # the packed op has no backward
    key = (w.data_ptr(), w._version)
    cached = layer.__dict__.get("_packed_weight")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = layer.__dict__["_packed_weight"] = (
                key,
                torch.ops.mkldnn._reorder_linear_weight(w),
            )
    bias = layer.bias
    return torch.ops.mkldnn._linear_pointwise(x, cached[1], bias, "none", [], "")


def linear(layer: nn.Module, x: torch.Tensor, any_rows: bool = False) -> torch.Tensor:
    """``layer(x)``; an fp32 ``nn.Linear`` runs weight-stationary on at most ``SKINNY_ROWS`` rows
    (on any number with ``any_rows``); a bf16 one on at most ``PACKED_ROWS`` rows runs
    :func:`packed_linear` (weight-stationary is slower for bf16: benchmarks/README.md)."""
    if torch.compiler.is_exporting():  # a graph (ofa_vl.export) leaves the kernel to its runtime
        return layer(x)
    if type(layer) is not nn.Linear or type(layer.weight) is not nn.Parameter:
        return layer(x)  # a quantized module (int8-legacy) or torchao's int8 weights: own kernels
    rows = x.numel() // x.shape[-1]
    if layer.weight.dtype != torch.float32:  # bf16: oneDNN's kernel on its own weight layout
        out = packed_linear(layer, x) if rows <= PACKED_ROWS else None
        return layer(x) if out is None else out
    if not any_rows and rows > SKINNY_ROWS:
        return layer(x)
    return weight_stationary(x, layer.weight, layer.bias)
