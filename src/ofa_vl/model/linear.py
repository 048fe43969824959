"""Linear layers for the few rows of a decoding step (benchmarks/README.md has the measurements).

A batch-1 decoding step reads every decoder weight once for 5 rows (the beams): it runs at the
speed weights stream from memory. On the CPU the kernel that streams them fastest is oneDNN's on
a weight it has prepacked into its own blocked layout (``packed_linear``): 38-50 GB/s on a 2-core
AVX-512 EPYC, against 11-28 GB/s for MKL (``F.linear`` or the weight-stationary product) and
oneDNN on the plain weight, which it reorders on every call. The packed copy is kept beside the
weight: the Linears a decoding step reads cost OFA-base +381 MB in fp32, +190 MB in bf16
(``OFA_VL_PREPACK=0`` turns it off).
"""

from __future__ import annotations

import functools
import os
import weakref

import torch
from torch import nn

SKINNY_ROWS = 16  # up to this many rows (5 beams x 3 images) the weight-stationary product wins
# rows packed for: a decoding step of up to 25 images x 5 beams, not the encoder's hundreds
# (4 % faster packed, for another copy of its weights)
PACKED_ROWS = 128
PREPACK = os.environ.get("OFA_VL_PREPACK", "1") != "0"  # read once, at import
# Linear -> ((weight's address, version), packed weight); beside the module, not in it: an
# opaque oneDNN tensor cannot be deep-copied or pickled with a model
PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, int], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def weight_stationary(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(W @ xᵀ)ᵀ``: BLAS streams ``W`` once.

    MKL's fastest fp32 path on a few rows where no packed weight applies: 2.6x faster than
    ``F.linear`` for the 59,457 x 768 output projection on 5 rows; slower on many rows.
    """
    flat = x.reshape(-1, x.shape[-1]).T  # (C_in, N)
    y = weight @ flat if bias is None else torch.addmm(bias[:, None], weight, flat)
    return y.T.contiguous().view(*x.shape[:-1], -1)


@functools.cache
def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether this build and CPU run oneDNN's prepacked Linear in ``dtype`` (bf16 needs AVX-512
    BW/VL/DQ or better)."""
    if not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def packed_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor | None:
    """``layer(x)`` on the CPU through oneDNN's prepacked copy of its weight (:func:`packed`)."""
    return packed(layer, x, layer.weight, layer.bias)


def packed(
    owner: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor | None:
    """``F.linear(x, weight, bias)`` on the CPU through oneDNN's prepacked copy of ``weight``,
    kept for ``owner``, made on first use and remade when the weight changes; None where it does
    not apply (another dtype or device, gradients: the op has no backward, a traced graph). bf16
    gives ``F.linear``'s numbers; fp32 differs from it in round-off only (another summation
    order), as weight-stationary does."""
    if weight.device.type != "cpu" or x.dtype != weight.dtype or torch.compiler.is_compiling():
        return None
    grads = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)
    if grads or not PREPACK or not onednn_packs(weight.dtype):
        return None
    key = (weight.data_ptr(), weight._version)
    cached = PACKED.get(owner)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = PACKED[owner] = (key, torch.ops.mkldnn._reorder_linear_weight(weight))
    return torch.ops.mkldnn._linear_pointwise(x, cached[1], bias, "none", [], "")


def project(owner: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (..., V) products with a (V, C) table, any number of rows: packed (for
    ``owner``) on a decoding step's rows, else weight-stationary."""
    rows = x.numel() // x.shape[-1]
    out = packed(owner, x, weight) if rows <= PACKED_ROWS else None
    return weight_stationary(x, weight) if out is None else out


def linear(layer: nn.Module, x: torch.Tensor, any_rows: bool = False) -> torch.Tensor:
    """``layer(x)``; an ``nn.Linear`` on at most ``PACKED_ROWS`` rows runs :func:`packed_linear`
    where it applies, else an fp32 one runs weight-stationary on at most ``SKINNY_ROWS`` rows
    (on any number with ``any_rows``)."""
    if torch.compiler.is_exporting():  # a graph (ofa_vl.export) leaves the kernel to its runtime
        return layer(x)
    if type(layer) is not nn.Linear or type(layer.weight) is not nn.Parameter:
        return layer(x)  # int8 modules (Int8Linear, int8-legacy, torchao) run their own kernels
    rows = x.numel() // x.shape[-1]
    if rows <= PACKED_ROWS and (out := packed_linear(layer, x)) is not None:
        return out
    if layer.weight.dtype != torch.float32 or (not any_rows and rows > SKINNY_ROWS):
        return layer(x)
    return weight_stationary(x, layer.weight, layer.bias)
