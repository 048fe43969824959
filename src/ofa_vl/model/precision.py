"""Inference precisions of a loaded OFA: bf16 weights, int8 through torchao, legacy int8.

- ``bf16``: the weights are cast once (:func:`cast_weights`); images, sublayers and the KV cache
  run in bf16. Measured on the bundled model's 40 held-out captions (benchmarks/README.md), two
  things stay fp32: the residual stream with the LayerNorms at its edges (``StreamNorm``), and
  the logits the search keeps: a decoding step computes all logits from the bf16 table, then
  those of the candidates it may keep again from an fp32 copy (``Decoder.refine``), so a step
  reads the bf16 table, not the fp32 one (issue #30). All-bf16 changed 5 of 40 captions (best
  scores off by up to 4.4e-3), this none (8.1e-4). LayerNorm statistics
  and the attention softmax accumulate in fp32 inside PyTorch's bf16 kernels. Autocast stays for
  training only: it re-casts every fp32 weight at every op of every decoding step.
- ``int8``: torchao's int8 weight-only Linears (activations stay float): on the bundled model the
  fp32 captions exactly, and faster than dynamic int8 on CPU (benchmarks/README.md).
- ``int8-dynamic``: torchao's dynamic int8 activations x int8 weights on every Linear.
- ``int8-legacy``: ``torch.ao.quantization.quantize_dynamic`` (deprecated in torch 2.13; CPU),
  kept to compare against (benchmarks/README.md).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import OFAValueError
from .layers import StreamNorm

if TYPE_CHECKING:
    from .ofa import OFA

PRECISIONS = ("fp32", "bf16", "int8", "int8-dynamic", "int8-legacy")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise OFAValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def apply_precision(model: OFA, precision: str) -> OFA:
    """``model`` (fp32, eval) converted to ``precision`` for inference; fp32 returns it as is."""
    check_precision(precision)
    if precision == "bf16":
        return cast_weights(model, torch.bfloat16)
    if precision == "int8-legacy":
        return quantize_dynamic_legacy(model)
    if precision in ("int8", "int8-dynamic"):
        return quantize_torchao(model, weight_only=precision == "int8")
    return model


def cast_weights(model: OFA, dtype: torch.dtype) -> OFA:
    """``model``'s weights in ``dtype`` (bf16, fp16), once and in place, except the residual
    stream's LayerNorms and an fp32 copy of the output projection (``Decoder.logits_fp32``):
    the stream and the logits the search keeps stay fp32."""
    fp32_table = model.decoder.output_projection.weight.detach().clone()
    model.to(dtype)  # (would cast a buffer set before it)
    model.decoder.logits_fp32 = fp32_table
    for m in model.modules():
        if isinstance(m, StreamNorm):
            m.float()
            m.compute_dtype = dtype
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The float dtype inputs (images) must have: that of the token embedding."""
    embed = model.get_submodule("embed_tokens")
    assert isinstance(embed, nn.Embedding)
    return embed.weight.dtype


@contextmanager
def quiet_torchao_import() -> Iterator[None]:
    """Silence what importing torchao (directly or through PEFT) logs on a CPU build: GPU
    kernels it cannot load, torch's pytree enum deprecations."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def quantize_torchao(model: OFA, weight_only: bool = False) -> OFA:
    """Every Linear to torchao int8 (in place): weight-only, or with dynamic int8 activations."""
    try:
        with quiet_torchao_import():
            from torchao.quantization import (
                Int8DynamicActivationInt8WeightConfig,
                Int8WeightOnlyConfig,
                quantize_,
            )
    except ImportError as e:
        raise OFAValueError(
            "int8 needs torchao: pip install 'ofa-vl[int8]' (or --precision int8-legacy)"
        ) from e
    config = Int8WeightOnlyConfig() if weight_only else Int8DynamicActivationInt8WeightConfig()
    # the output projection shares its weight with the token embedding: quantize a copy of it
    decoder = model.decoder
    decoder.output_projection.weight = nn.Parameter(
        decoder.output_projection.weight.detach().clone(), requires_grad=False
    )
    quantize_(model, config)
    return model


def quantize_dynamic_legacy(model: OFA) -> OFA:
    """``torch.ao.quantization.quantize_dynamic`` of every Linear (weights int8); CPU only."""
    if model.device.type != "cpu":
        raise OFAValueError("int8-legacy runs on the CPU only; use int8 (torchao) or bf16")
    with warnings.catch_warnings():  # torch 2.13 flags its own quantized-tensor API as deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
