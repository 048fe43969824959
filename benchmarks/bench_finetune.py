"""Fine-tuning cost of OFA-base (random weights, no download): trainable parameters, peak memory
and step time (wall and CPU) for full fine-tuning, LoRA, activation checkpointing and both.

    python benchmarks/bench_finetune.py                      # 480 px, 2 examples, all configs
    python benchmarks/bench_finetune.py --configs lora lora+ckpt --image-size 384

One training step = forward, label-smoothed cross-entropy, backward, AdamW step, as ``ofa
train`` runs it (captioning shapes: a 20-token prompt, a 20-token target). Each configuration
runs in its own process, so its peak resident memory (``ru_maxrss``: weights, gradients, AdamW
state and activations; torch's CPU allocator keeps no statistics) is its own. On a shared
machine the CPU time of a step (``time.process_time``, all threads) is steadier than its wall
time. LoRA freezes the ResNet, whose BatchNorm then runs in eval mode (as ``--freeze-resnet``).
``bf16`` is bf16 autocast (``--precision bf16`` of ``ofa train``): measured only where the CPU
has native bf16.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ofa_vl import OFA, OFAConfig
from ofa_vl.lora import LoraOptions, add_lora, lora_parameters

CONFIGS = {  # name -> (LoRA, activation checkpointing, bf16 autocast)
    "full": (False, False, False),
    "full+ckpt": (False, True, False),
    "lora": (True, False, False),
    "lora+ckpt": (True, True, False),
    "lora+ckpt+bf16": (True, True, True),
}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 matmul on x86 CPUs


def native_bf16() -> bool:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    return any(flag in text for flag in BF16_FLAGS)


def rss_mb() -> float:
    """The current resident set size (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_config(name: str, args: argparse.Namespace) -> dict[str, float | int | str]:
    """Build OFA-base as ``name`` says and time ``args.steps`` training steps after a warm-up."""
    lora, ckpt, bf16 = CONFIGS[name]
    torch.manual_seed(0)
    model = OFA(OFAConfig.from_preset("base"))
    if lora:
        add_lora(model, LoraOptions(rank=args.rank))
    model.set_gradient_checkpointing(ckpt).train()
    if lora:
        model.encoder.embed_images.eval()  # frozen ResNet: frozen BatchNorm statistics too
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    B, V = args.batch, model.cfg.vocab_size
    images = torch.randn(B, 3, args.image_size, args.image_size)
    input_ids = torch.randint(4, V, (B, 20))
    decoder_ids = torch.randint(4, V, (B, 21))  # BOS + target; labels are the next tokens
    baseline = rss_mb()
    times, cpu_times = [], []
    for _ in range(1 + args.steps):  # the first step allocates AdamW's state: a warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = model(input_ids, images, decoder_ids[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), decoder_ids[:, 1:].flatten(), label_smoothing=0.1
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    trainable, total = lora_parameters(model)
    return {
        "config": name,
        "trainable": trainable,
        "total": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_rss_mb": baseline,
        "step_s": statistics.median(times[1:]),
        "step_cpu_s": statistics.median(cpu_times[1:]),
        "first_step_s": times[0],
    }


def table(rows: list[dict[str, float | int | str]]) -> str:
    head = (
        "config          trainable params  % of total  peak RSS MB  after build MB"
        "  step s  step CPU s  first step s"
    )
    lines = [head]
    for r in rows:
        share = 100 * float(r["trainable"]) / float(r["total"])
        lines.append(
            f"{r['config']:15s} {int(r['trainable']):16,d} {share:10.2f}% "
            f"{float(r['peak_rss_mb']):12.0f} {float(r['model_rss_mb']):15.0f} "
            f"{float(r['step_s']):7.2f} {float(r['step_cpu_s']):11.2f} "
            f"{float(r['first_step_s']):13.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--image-size", type=int, default=480)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up step")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_config(args.child, args)))
        return
    print(f"OFA-base, {args.batch} x {args.image_size} px, LoRA rank {args.rank}, "
          f"{args.threads} threads, torch {torch.__version__}")  # fmt: skip
    rows = []
    for name in args.configs:
        if CONFIGS[name][2] and not native_bf16():
            print(f"{name} skipped: this CPU has no native bf16 matmul ({', '.join(BF16_FLAGS)})")
            continue
        shape = ["--image-size", str(args.image_size), "--batch", str(args.batch)]
        run = ["--steps", str(args.steps), "--rank", str(args.rank), "--threads", str(args.threads)]
        out = subprocess.run(
            [sys.executable, __file__, *shape, *run, "--child", name],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
