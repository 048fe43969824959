"""Inference precisions of a loaded OFA: bf16 weights, an int8 output projection, int8 Linears.

- ``bf16``: the weights are cast once (:func:`cast_weights`); images, sublayers and the KV cache
  run in bf16. Measured on the bundled model's 40 held-out captions (benchmarks/README.md), three
  things stay fp32: the attention biases on the CPU (``attention.mask_dtype``; rounded to bf16
  they flipped one near-tie caption), the residual stream with the LayerNorms at its edges
  (``StreamNorm``), and the logits the search keeps: a decoding step computes all logits from
  the bf16 table, then those of the candidates it may keep again from an fp32 copy
  (``Decoder.refine``), so a step reads the bf16 table, not the fp32 one (issue #30; an int8
  table, 2x faster on the CPU, moved the scores 1.5x as far from fp32's through the tail's
  log-sum-exp: not taken). All-bf16 changed 5 of 40 captions (best scores off by up to 4.4e-3),
  this none (2.3e-4 on average). LayerNorm statistics and the attention softmax accumulate in
  fp32 inside PyTorch's bf16 kernels. On the CPU the encoder's attention (256 x 256 logits per
  head or more) runs one head at a time with fp32 logits and softmax
  (``attention.per_head_attention``): 10 % off a caption at batch 1 and 8, the same ids.
  Autocast stays for training only: it re-casts every fp32 weight at every op of every
  decoding step.
- ``int8``: two parts, each measured to keep the captions of the bundled model's 40 held-out
  scenes (benchmarks/README.md). (1) The output projection's 59,457 x 768 table, half of what a
  batch-1 decoding step reads in fp32, as int8 (fbgemm's dynamic int8 kernel on the CPU, VNNI
  where the CPU has it; torchao's int8 weight-only on a GPU) giving approximate logits, with the
  candidates the search may keep recomputed exactly from the fp32 table, as in bf16. (2) On the
  CPU, the encoder layers' attention projections and first FFN Linear (``ENCODER_INT8``) as
  :class:`Int8Linear`: int8 weights and per-token int8 activations on oneDNN's integer GEMM,
  5-6x faster than fp32 on the encoder's hundreds of tokens, where that GEMM is exact
  (:func:`exact_int8_gemm`: VNNI or AMX). The decoder's layers, the FFNs'
  second Linear and the image projection stay fp32: int8 there changed captions or boxes.
- ``int8-legacy``: every Linear int8 (``torch.ao.quantization.quantize_dynamic``, a weight scale
  per row, activations quantized per call; CPU), the logits refined the same way: the fastest CPU
  path, and a lossy one (4 to 6 of those 40 captions changed in the sittings measured: 8-bit weights
  move the scores by up to 5e-3, more than the near-ties between two of the model's templates).
Measured slower than fp32 on every CPU tried (AVX2 and AVX-512 with VNNI), so no longer offered:
torchao's weight-only int8 of every Linear (the old ``int8``: it dequantizes per call) and its
dynamic int8 activations (``int8-dynamic``, which also changed 4 of the 40 captions; torchao 0.18
multiplies int8 on the CPU as int32 ``matmul``s, which is why :class:`Int8Linear` calls
``torch._int_mm`` itself).
"""

from __future__ import annotations

import functools
import logging
import re
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

PRECISIONS = ("fp32", "bf16", "int8", "int8-legacy")
PER_ROW = torch.ao.quantization.per_channel_dynamic_qconfig  # int8 weights: a scale per row
TINY = torch.finfo(torch.float32).tiny  # the scale of an all-zero row
# the CPU's int8 encoder Linears: those whose int8 kept the held-out captions (benchmarks/README.md)
ENCODER_INT8 = re.compile(r"encoder\.layers\.\d+\.(attn\.[qkv]_proj|attn\.out_proj|fc1)")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise OFAValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def apply_precision(model: OFA, precision: str) -> OFA:
    """``model`` (fp32, eval) converted to ``precision`` for inference; fp32 returns it as is."""
    check_precision(precision)
    if precision == "bf16":
        return cast_weights(model, torch.bfloat16)
    if precision == "int8":
        if model.device.type == "cpu" and exact_int8_gemm():
            int8_linears(model, [n for n, _ in model.named_modules() if ENCODER_INT8.fullmatch(n)])
        return quantize_int8(model, {"decoder.output_projection"})
    if precision == "int8-legacy":
        return quantize_int8(model, {n for n, m in model.named_modules() if type(m) is nn.Linear})
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


def quantize_int8(model: OFA, names: set[str]) -> OFA:
    """The Linears ``names`` of ``model`` as int8 (in place); when the output projection is one,
    its logits become approximate and ``Decoder.refine`` recomputes the kept ones from the fp32
    table (the token embedding's, which stays fp32)."""
    cpu = model.device.type == "cpu"
    if not cpu and names != {"decoder.output_projection"}:  # checked before the model changes
        raise OFAValueError("int8-legacy runs on the CPU only; use int8 or bf16")
    if "decoder.output_projection" in names:
        model.decoder.logits_fp32 = model.decoder.embed_tokens.weight.detach()
    if not cpu:
        return quantize_torchao_projection(model)
    with warnings.catch_warnings():  # torch 2.13 flags its own quantized-tensor API deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model, {n: PER_ROW for n in names}, inplace=True
        )


def quantize_torchao_projection(model: OFA) -> OFA:
    """The output projection as torchao int8 weight-only (a GPU's int8 kernel), in place."""
    try:
        with quiet_torchao_import():
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as e:
        raise OFAValueError("int8 on a GPU needs torchao: pip install 'ofa-vl[int8]'") from e
    decoder = model.decoder  # tied to the token embedding: quantize a copy of it
    decoder.output_projection.weight = nn.Parameter(
        decoder.output_projection.weight.detach().clone(), requires_grad=False
    )
    quantize_(decoder.output_projection, Int8WeightOnlyConfig())
    return model


class Int8Linear(nn.Module):
    """An inference ``nn.Linear`` as int8 weights (a scale per output row) times int8 activations
    (a scale per token, found at each call), multiplied exactly in int32 (:func:`int8_mm`:
    oneDNN's integer GEMM on the CPU, VNNI where the CPU has it), then scaled back to fp32.

    A scale per token keeps every token's (and so every image's) result independent of the
    others in the batch, unlike fbgemm's one scale per call (``int8-legacy``), and rounds less:
    on the held-out captions the scores moved 2.2e-4 from fp32's on average (largest 8.3e-4)
    against 2.7e-4 (3.1e-3) with fbgemm's kernel on the same Linears.
    """

    weight: torch.Tensor  # (out, in) int8
    weight_scale: torch.Tensor  # (out,)
    bias: torch.Tensor | None

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        w = layer.weight.detach().float()  # (out, in)
        scale = (w.abs().amax(1) / 127).clamp(min=TINY)  # (out,)
        self.register_buffer("weight", (w / scale[:, None]).round().to(torch.int8))
        self.register_buffer("weight_scale", scale)
        bias = None if layer.bias is None else layer.bias.detach().float()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()  # (N, in)
        scale = (flat.abs().amax(1, keepdim=True) / 127).clamp(min=TINY)  # (N, 1)
        q = (flat / scale).round_().to(torch.int8)  # (N, in), in [-127, 127]
        y = int8_mm(q, self.weight.T).float().mul_(scale)  # (N, out)
        if self.bias is None:
            y.mul_(self.weight_scale)
        else:
            torch.addcmul(self.bias, y, self.weight_scale, out=y)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_linears(model: nn.Module, names: list[str]) -> None:
    """The ``nn.Linear`` submodules ``names`` of ``model`` replaced by :class:`Int8Linear`s."""
    for name in names:
        parent, _, leaf = name.rpartition(".")
        layer = model.get_submodule(name)
        if type(layer) is not nn.Linear:
            raise OFAValueError(
                f"{name} is a {type(layer).__name__}, not an nn.Linear to make int8"
            )
        setattr(model.get_submodule(parent), leaf, Int8Linear(layer))


@functools.cache
def exact_int8_gemm() -> bool:
    """Whether ``torch._int_mm`` multiplies int8 exactly on this CPU. oneDNN's kernel without
    VNNI (AVX2, AVX-512 before VNNI) sums pairs of u8 x s8 products in saturating int16: with
    ``ONEDNN_MAX_CPU_ISA=AVX2`` every element of a full-range product came out wrong."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-127, 128, (n, 256), dtype=torch.int8, generator=g) for n in (32, 64))
    try:
        return torch.equal(torch._int_mm(a, b.T), a.int() @ b.int().T)
    except RuntimeError:  # a build without the kernel
        return False


def int8_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, K) int8 @ (K, M) int8 -> (N, M) int32, exact: ``torch._int_mm`` where it is exact,
    else an int32 product (slow: ``apply_precision`` then leaves the Linears fp32)."""
    return torch._int_mm(a, b) if exact_int8_gemm() else a.int() @ b.int()
