"""Position machinery of OFA: relative-position buckets and image position ids.

OFA:models/ofa/unify_transformer.py ``make_token_bucket_position`` / ``make_image_bucket_position``.
Instead of the 1024x1024 and 1765x1765 index buffers of the reference, buckets are computed for
just the positions in use; the values are identical.
"""

from __future__ import annotations

import math

import torch


def token_bucket_table(bucket_size: int, max_position: int = 1024) -> torch.Tensor:
    """Bucket of every relative distance ``-(max_position-1) .. max_position-1``.

    Index with ``q - k + max_position - 1``. Same float ops as the reference, element for element.
    """
    relative_pos = torch.arange(-(max_position - 1), max_position, dtype=torch.long)
    sign = torch.sign(relative_pos)
    mid = bucket_size // 2
    abs_pos = torch.where(
        (relative_pos < mid) & (relative_pos > -mid), mid - 1, torch.abs(relative_pos)
    )
    log_pos = (
        torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    )
    log_pos = log_pos.int()
    bucket_pos = torch.where(abs_pos.le(mid), relative_pos, log_pos * sign).long()
    return bucket_pos + bucket_size - 1


def token_buckets(
    table: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, max_position: int = 1024
) -> torch.Tensor:
    """(Lq,) and (Lk,) absolute positions -> (Lq, Lk) bucket ids."""
    return table[q_pos[:, None] - k_pos[None, :] + max_position - 1]


def image_buckets(q_ids: torch.Tensor, k_ids: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """Image position ids (``row * bucket_size + col + 1``, 0 = special) -> relative buckets.

    ``q_ids`` (..., Lq) and ``k_ids`` (..., Lk) give (..., Lq, Lk), equal to indexing the
    reference's ``image_rp_bucket[q_ids][:, k_ids]``.
    """
    span = 2 * bucket_size - 1
    num_rel = span * span + 3
    qr, qc = (q_ids - 1).div(bucket_size, rounding_mode="floor"), (q_ids - 1) % bucket_size
    kr, kc = (k_ids - 1).div(bucket_size, rounding_mode="floor"), (k_ids - 1) % bucket_size
    rel = (qr[..., :, None] - kr[..., None, :] + bucket_size - 1) * span + (
        qc[..., :, None] - kc[..., None, :] + bucket_size - 1
    )
    q0 = (q_ids == 0)[..., :, None]
    k0 = (k_ids == 0)[..., None, :]
    rel = torch.where(q0, num_rel - 3, rel)
    rel = torch.where(k0, num_rel - 2, rel)
    return torch.where(q0 & k0, num_rel - 1, rel)


def image_position_ids(height: int, width: int, bucket_size: int) -> torch.Tensor:
    """Ids of an ``height x width`` patch grid, row-major: ``row * bucket_size + col + 1``."""
    rows = torch.arange(height)[:, None] * bucket_size
    cols = torch.arange(width)[None, :]
    return (rows + cols + 1).reshape(-1)


def code_position_ids(code_image_size: int, bucket_size: int, length: int) -> torch.Tensor:
    """Decoder position ids for image-code generation: ``[0] + window + [1024]...``.

    OFA:models/ofa/unify_transformer.py ``image_position_idx`` (codes are 8x downsampled).
    """
    window = code_image_size // 8
    ids = torch.cat([torch.tensor([0]), image_position_ids(window, window, bucket_size)])
    pad = max(length - ids.numel(), 0)
    return torch.cat([ids, torch.full((pad,), 1024, dtype=torch.long)])[:length]
