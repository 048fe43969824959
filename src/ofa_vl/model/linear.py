"""Linear layers for the few rows of a decoding step (benchmarks/README.md has the measurements)."""

from __future__ import annotations

import torch
from torch import nn

SKINNY_ROWS = 16  # up to this many rows (5 beams x 3 images) the weight-stationary product wins


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


def linear(layer: nn.Module, x: torch.Tensor, any_rows: bool = False) -> torch.Tensor:
    """``layer(x)``; an fp32 ``nn.Linear`` runs weight-stationary on at most ``SKINNY_ROWS`` rows
    (on any number with ``any_rows``). bf16 weights stay ``F.linear``: on 5 rows oneDNN's bf16
    kernel is 1.4-1.8x faster that way (AVX512-BF16, benchmarks/README.md)."""
    if torch.compiler.is_exporting():  # a graph (ofa_vl.export) leaves the kernel to its runtime
        return layer(x)
    many = not any_rows and x.numel() > SKINNY_ROWS * x.shape[-1]
    if not isinstance(layer, nn.Linear) or type(layer) is not nn.Linear or many:
        return layer(x)  # many rows, or a quantized (int8-legacy) module with its own kernel
    if type(layer.weight) is not nn.Parameter:
        return layer(x)  # torchao int8 weights: their own kernel
    if layer.weight.dtype != torch.float32:  # bf16 kernels read W fastest as F.linear (issue #30)
        return layer(x)
    return weight_stationary(x, layer.weight, layer.bias)
