"""How many generated ids of a bf16 model (weights cast once) agree with fp32, on the CPU.

    python benchmarks/bf16_agreement.py                          # random OFA-base (seeded)
    python benchmarks/bf16_agreement.py --checkpoint tests/.cache/ofa-test_seed0.pth --preset ""

The base-size model is ``bench_generate.random_base`` (no download); ``--checkpoint`` takes any
OFA checkpoint instead. Random images, beam search, exactly ``--new-tokens`` new tokens. Prints
equal ids position by position, whole sequences equal, and where the first difference falls.
bf16 matmuls are slow on CPUs without AVX512-BF16 / AMX: keep ``--image-size`` and the counts
small there (the defaults take a few minutes for OFA-base on 2 AVX2 cores).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from bench_generate import random_base
from bench_gpu import agreement, decode

from ofa_vl.checkpoints import load_model
from ofa_vl.model.precision import apply_precision


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", help="OFA weights (default: random, of --preset size)")
    p.add_argument("--preset", default="base", help="size of the random model")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = (
        load_model(args.checkpoint).eval() if args.checkpoint else random_base("fp32", args.preset)
    )
    bf16 = apply_precision(copy.deepcopy(fp32), "bf16")
    torch.manual_seed(1)
    size = args.image_size
    images = torch.randn(args.images, 3, size, size).clamp(-1, 1)
    t = time.perf_counter()
    with torch.inference_mode():
        ref = decode(fp32, images, args)
    t32, t = time.perf_counter() - t, time.perf_counter()
    with torch.inference_mode():
        low = decode(bf16, images.to(torch.bfloat16), args)
    t16 = time.perf_counter() - t
    same, total = agreement(low[:, 1:], ref[:, 1:])  # generated ids: <s> left out
    w = min(low.shape[1], ref.shape[1])
    differ = (low[:, :w] != ref[:, :w]).float()
    first = [int(row.argmax()) if row.any() else None for row in differ]  # first differing token
    name = args.checkpoint or f"random OFA-{args.preset}"
    print(
        f"{name}: {args.images} images of {size} px, beam {args.beams}, {args.new_tokens} new tokens"
    )
    print(f"generated ids equal to fp32: {same}/{total} ({same / total:.1%}); whole sequences equal: "
          f"{first.count(None)}/{len(first)}; first difference at position {first}")  # fmt: skip
    print(f"time: fp32 {t32:.1f} s, bf16 {t16:.1f} s")


if __name__ == "__main__":
    main()
