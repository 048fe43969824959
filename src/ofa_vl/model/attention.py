"""Multi-head attention with OFA's additive position bias and NormFormer per-head scale.

OFA:models/ofa/unify_multihead_attention.py: q is scaled by ``(head_dim * attn_scale_factor)
** -0.5``, the position bias is added to the logits, and each head's output is multiplied by a
learned ``c_attn`` before the output projection.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .linear import linear

# logits per head from which bf16 attention on the CPU runs one head at a time (the crossover
# measured on a 2-core AVX512-BF16 EPYC lies between 181 x 181 and 256 x 256; issue #30)
PER_HEAD_LOGITS = 2**16


def mask_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype attention biases are built and passed in for queries of ``dtype``: fp32 on the
    CPU, whose attention kernels add an fp32 mask to bf16 logits unrounded (2-5x closer to the
    fp32 output than a bf16 mask, and no cast per layer, issue #30); the queries' own elsewhere."""
    return torch.float32 if device.type == "cpu" else dtype


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where the per-head path
    was measured to win."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@contextmanager
def bf16_fp32_products() -> Iterator[None]:
    """fp32 matmuls in oneDNN's bf16 arithmetic while it runs (a process-wide torch flag): 2x
    as fast on an AVX512-BF16 CPU, and exact where the factors are bf16 values (they convert
    without rounding; the sums stay fp32). A no-op without native bf16 or the flag."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    before = getattr(matmul, "fp32_precision", None)
    if before is None or not native_bf16():
        yield
        return
    matmul.fp32_precision = "bf16"  # type: ignore[union-attr]
    try:
        yield
    finally:
        matmul.fp32_precision = before  # type: ignore[union-attr]


def per_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """bf16 attention of (B, H, Lq, D) queries one head at a time: fp32 logits (bf16 factors,
    fp32 sums; the scale applied to the sums) with the bias added unrounded, an fp32 softmax,
    and its probabilities rounded to bf16 for the product with ``v``. On an AVX512-BF16 CPU,
    1.04-1.15x (256 tokens) to 1.8-1.9x (908) as fast as PyTorch's bf16 flash kernel, which
    takes 5x as long as the two products alone (908 tokens: 15.9 vs 2.8 ms); slower on fewer
    logits (benchmarks/README.md)."""
    B, H, Lq, _ = q.shape
    q32, kT = q.float(), k.float().transpose(-1, -2)  # (B, H, Lq, D), (B, H, D, Lk)
    full = None if bias is None else bias.expand(B, H, Lq, k.shape[2])
    out = torch.empty_like(q)
    with bf16_fp32_products():
        for b in range(B):
            for h in range(H):
                qh, kh = q32[b, h], kT[b, h]
                logits = (  # (Lq, Lk)
                    torch.mm(qh, kh).mul_(scale)
                    if full is None
                    else torch.addmm(full[b, h], qh, kh, alpha=scale)
                )
                torch.mm(logits.softmax(-1).to(q.dtype), v[b, h], out=out[b, h])
    return out


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, scale_factor: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = (self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.c_attn = nn.Parameter(torch.ones(num_heads))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, C) -> keys and values, each (B, H, L, D)."""
        return self._heads(linear(self.k_proj, x)), self._heads(linear(self.v_proj, x))

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
        query_order: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` (B, Lq, C) to ``kv`` (self-attention when None).

        ``bias`` broadcasts to (B, H, Lq, Lk) and holds positions and masks (-inf = masked).
        ``query_order`` (Lq,), a permutation that is its own inverse: the queries are attended
        in that order, which ``bias``'s rows follow, and the outputs put back in theirs.
        """
        B, Lq, C = x.shape
        q = self._heads(linear(self.q_proj, x))
        k, v = self.project_kv(x) if kv is None else kv
        if query_order is not None:
            q = q.index_select(2, query_order)
        if bias is not None:
            bias = bias.to(mask_dtype(q.dtype, q.device))
        dtype, dropout = q.dtype, self.dropout if self.training else 0.0
        cpu = q.device.type == "cpu"
        logits = Lq * k.shape[2]  # per head
        many = cpu and dtype == torch.bfloat16 and Lq > 1 and logits >= PER_HEAD_LOGITS
        eager = dropout == 0.0 and not q.requires_grad and not torch.compiler.is_compiling()
        if many and eager and q.shape[0] == k.shape[0] and native_bf16():  # the encoder's
            out = per_head_attention(q, k, v, bias, self.scale)
        else:
            if cpu and dtype != torch.float32 and Lq == 1:
                # a decoding step's one query: the CPU's bf16 kernel takes 3-4x as long as
                # fp32's (5 rows x 28 keys: 0.10 vs 0.03 ms with the casts), no more exact
                q, k, v = q.float(), k.float(), v.float()
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale
            ).to(dtype)
        if query_order is not None:
            out = out.index_select(2, query_order)
        out = out * self.c_attn.to(out.dtype)[:, None, None]
        return linear(self.out_proj, out.transpose(1, 2).reshape(B, Lq, C))
