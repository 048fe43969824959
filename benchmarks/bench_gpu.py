"""OFA-base captioning on a GPU: bf16 and fp16 at batch 1, 32 and 128, for one short device call.

    python benchmarks/bench_gpu.py                 # on a machine with CUDA
    python benchmarks/bench_gpu.py --dry-run       # CPU: the tiny preset, small batches
    python benchmarks/bench_gpu.py --compile reduce-overhead   # compiled steps, CUDA graphs

Random OFA-base weights unless ``--checkpoint`` (no download), 480 px images, beam 5, exactly
``--new-tokens`` new tokens. Prints images/s and peak GPU memory per case, and how many of the
generated ids of the first ``--check`` images equal those of the CPU fp32 run.
``--dry-run`` runs every CPU part (model, reference ids, the timing loop) on the CPU, with the
tiny preset and batches 1 and 2, so the script is known to work before a GPU is lent.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from bench_generate import random_base

from ofa_vl import OFA
from ofa_vl.checkpoints import load_model
from ofa_vl.model.compile import compile_decoder
from ofa_vl.model.precision import cast_weights

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROMPT = [0, 99, 473, 5, 2274, 6190, 116, 2]  # " what does the image describe?"


def decode(model: OFA, images: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    ids = torch.tensor([PROMPT] * images.shape[0], device=images.device)
    gen = {"num_beams": args.beams, "max_new_tokens": args.new_tokens}
    return model.generate(ids, images, min_new_tokens=args.new_tokens, **gen)  # type: ignore[return-value]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(
    model: OFA, images: torch.Tensor, args: argparse.Namespace
) -> tuple[float, float, torch.Tensor]:
    """Best wall time of ``--reps`` runs after a warm-up, peak memory (GB), the ids."""
    dev = images.device
    decode(model, images, args)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    best, out = float("inf"), images.new_empty(0)
    for _ in range(args.reps):
        sync(dev)
        t = time.perf_counter()
        out = decode(model, images, args)
        sync(dev)
        best = min(best, time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else 0.0
    return best, peak, out


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """Equal ids over the common width (rows right-padded), and how many were compared."""
    w = min(a.shape[1], b.shape[1])
    return int((a[:, :w].cpu() == b[:, :w].cpu()).sum()), a.shape[0] * w


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", help="OFA-base weights (default: random)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128])
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"])
    p.add_argument("--image-size", type=int, default=480)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--check", type=int, default=4, help="images whose ids are checked on the CPU")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, batches 1 and 2")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="compiled decoding step (reduce-overhead: with CUDA graphs); warm-up not timed",
    )
    args = p.parse_args()
    if args.dry_run:
        device = torch.device("cpu")
        args.batch_sizes, args.image_size, args.new_tokens, args.reps = [1, 2], 96, 4, 1
        args.check = min(args.check, 2)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or with --dry-run")
    else:
        device = torch.device("cuda")
        print(torch.cuda.get_device_name(device), f"torch {torch.__version__}")
    base = (
        load_model(args.checkpoint).eval()
        if args.checkpoint
        else random_base("fp32", "tiny" if args.dry_run else "base")
    )
    torch.manual_seed(1)
    size = args.image_size
    all_images = torch.randn(max(args.batch_sizes), 3, size, size).clamp(-1, 1)
    t = time.perf_counter()
    with torch.inference_mode():
        reference = decode(base, all_images[: args.check], args)  # CPU fp32
    print(f"CPU fp32 reference ids of {args.check} images: {time.perf_counter() - t:.1f} s")
    print(
        f"{'dtype':5s} {'B':>4s} {'s/batch':>8s} {'img/s':>7s} {'peak GB':>7s} {'ids = CPU fp32':>15s}"
    )
    for name in args.dtypes:
        model = copy.deepcopy(base).to(device)
        if name != "fp32":  # as --precision bf16: the residual stream and logits stay fp32
            model = cast_weights(model, DTYPES[name])
        if args.compile:
            compile_decoder(model, None if args.compile == "default" else args.compile)
        for batch in args.batch_sizes:
            images = all_images[:batch].to(device, DTYPES[name])
            with torch.inference_mode():
                secs, peak, ids = time_case(model, images, args)
            n = min(batch, args.check)
            same, total = agreement(ids[:n], reference[:n])
            print(
                f"{name:5s} {batch:4d} {secs:8.3f} {batch / secs:7.1f} {peak:7.2f} {same:>8d}/{total}"
            )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
