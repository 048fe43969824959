"""Decoding speed of OFA-base (random weights, no download): per-stage times, images/s, memory,
and achieved GFLOP/s against this machine's measured matmul peak.

    python benchmarks/bench_generate.py --threads 2 --compile
    python benchmarks/bench_generate.py --batch-sizes 1 8 --precision fp32 bf16 int8
    python benchmarks/bench_generate.py --quick   # caption only, 10 new tokens: a short check

Every case decodes exactly ``--new-tokens`` tokens (``min_new_tokens`` forces the length), so the
work is the same for every implementation. Precisions are those of ``--precision`` in the CLI
(``ofa_vl.model.precision``): bf16 = weights cast once; int8 = the output projection int8;
int8-legacy = every Linear int8 (``quantize_dynamic``). bf16 is skipped on CPUs without native bf16 (flags printed).
The naive path (no KV cache, the whole prefix recomputed every step, as mmpretrain 1.2.0
effectively does) is timed in the same run at fp32 batch 1, with a check that both give the same
token ids (``--no-compare`` skips it). ``--compile`` adds caption rows with the compiled decoding
step (``ofa_vl.model.compile``), its first call (the compilation) reported apart. ``--onnx fp32
int8`` adds caption rows of the same network exported to ONNX (``ofa_vl.onnx``; int8 = ONNX
Runtime's dynamic int8 MatMuls) and decoded by the same engine through ONNX Runtime, each against
PyTorch fp32's row of the same batch (speed ratio, same ids).
Freed memory is kept in the process as the ``ofa`` command does (``ofa_vl.allocator``;
``--system-malloc``: glibc's default, every block over 32 MB mmap'ed and faulted in afresh).
Caption rows also say what one decoding step costs whatever the CPU (``step_cost.py``): the MB
of weights it reads (``MB/step``) and the kernels it launches (``ops/step``).
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from step_cost import decoding_step_cost
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ofa_vl import OFA, OFAConfig, OFAPipeline, OFATokenizer, Trie, generate
from ofa_vl.allocator import keep_freed_memory
from ofa_vl.generation import GenerationConfig
from ofa_vl.model import linear as linear_module
from ofa_vl.model.compile import compile_decoder
from ofa_vl.model.precision import PRECISIONS, apply_precision, model_dtype
from ofa_vl.onnx.export import export_onnx, quantize_graphs
from ofa_vl.onnx.runtime import OnnxOFA, load_onnx_model
from ofa_vl.tasks import get_task
from ofa_vl.tokenizer import ENGLISH_BPE

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 matmul on x86 CPUs
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", *BF16_FLAGS, "amx_tile", "amx_int8")


def packed_linear_flops(x: Any, w: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
    """FLOPs of oneDNN's prepacked bf16 Linear (``model/linear.py``): (..., K) x (N, K)."""
    return 2 * math.prod(x[:-1]) * w[0] * w[1]


def cpu_attention_flops(q: Any, k: Any, v: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
    """FLOPs of PyTorch's CPU flash attention, which FlopCounterMode leaves out: q @ kᵀ, p @ v."""
    return int(sdpa_flop_count(q, k, v))


CPU_FLOPS = {  # kernels FlopCounterMode does not count
    torch.ops.mkldnn._linear_pointwise: packed_linear_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops,
}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(dtype: torch.dtype, n: int = 2048, budget_s: float = 2.0) -> float:
    """GFLOP/s of a square matmul (the machine's practical ceiling), within ``budget_s``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = time.perf_counter()
    a @ b  # warm-up; on CPUs without native bf16 this alone can take long: then shrink n
    if time.perf_counter() - t > budget_s / 4 and n > 256:
        return matmul_peak(dtype, n // 4, budget_s)
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < budget_s:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def once(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def timed(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def random_base(precision: str, preset: str = "base") -> OFA:
    """OFA of ``preset`` size with random weights (std 0.02, head scales 1) in ``precision``."""
    torch.manual_seed(0)
    model = OFA(OFAConfig.from_preset(preset))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
            elif name.endswith("c_attn"):
                p.fill_(1.0)
    return apply_precision(model.eval(), precision)


def case_inputs(
    batch: int, args: argparse.Namespace, case: str, dtype: torch.dtype, **kw: object
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A case's images, prompt ids and decoding options (the same for every implementation)."""
    torch.manual_seed(1)
    size = 512 if case == "grounding" else args.image_size
    images = torch.randn(batch, 3, size, size).clamp(-1, 1).to(dtype)
    ids = torch.tensor([[0, 99, 473, 5, 2274, 6190, 116, 2]] * batch)
    gen = {
        "num_beams": args.beams,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
    }
    gen.update(kw)  # type: ignore[arg-type]
    return images, ids, gen


def run_case(
    model: OFA, precision: str, batch: int, args: argparse.Namespace, case: str, **kw: object
) -> dict:
    images, ids, gen = case_inputs(batch, args, case, model_dtype(model), **kw)
    with torch.inference_mode():
        t_res, _ = timed(lambda: model.encoder.embed_images(images), args.reps)
        t_enc, _ = timed(lambda: model.encode(ids, images), args.reps)
        t_all, seqs = timed(lambda: model.generate(ids, images, **gen), args.reps)
        with FlopCounterMode(display=False, custom_mapping=CPU_FLOPS) as fc:
            model.generate(ids, images, **gen)
    row = {
        "case": case, "precision": precision, "batch": batch, "beams": gen["num_beams"],
        "resnet_s": t_res / batch, "encoder_s": (t_enc - t_res) / batch,
        "decode_s": (t_all - t_enc) / batch, "total_s": t_all / batch, "img_per_s": batch / t_all,
        "gflop": fc.get_total_flops() / 1e9 / batch, "seqs": seqs, "gen": gen,
    }  # fmt: skip
    row["gflops"] = row["gflop"] / row["total_s"]
    if case.startswith("caption"):  # what one decoding step reads and launches (step_cost.py)
        cost = decoding_step_cost(model, images, ids, gen["num_beams"])  # type: ignore[arg-type]
        row.update(step_mb=cost.weight_bytes / 1e6, step_launches=cost.launches)
    if args.compare and precision == "fp32" and batch == 1:
        t_naive, naive = timed(lambda: model.generate(ids, images, use_cache=False, **gen), 1)
        row["naive_s"] = t_naive / batch
        row["same_ids"] = bool(torch.equal(naive, seqs))  # type: ignore[arg-type]
    return row


def compiled_row(
    model: OFA, step: Callable[..., torch.Tensor], eager: dict, args: argparse.Namespace
) -> dict:
    """``eager``'s case again with the compiled decoding ``step``: its first call (compilation)
    reported apart, then eager and compiled calls interleaved (best of ``max(reps, 2)`` each), so
    that a noisy machine slows both alike. Stages are not timed apart (decode shown as nan)."""
    batch, gen = eager["batch"], eager["gen"]
    torch.manual_seed(1)
    images = torch.randn(batch, 3, args.image_size, args.image_size).clamp(-1, 1)
    images = images.to(model_dtype(model))
    ids = torch.tensor([[0, 99, 473, 5, 2274, 6190, 116, 2]] * batch)

    def run(compiled: Callable[..., torch.Tensor] | None) -> tuple[float, torch.Tensor]:
        model.decoder.compiled_step = compiled
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, images, **gen)
        return time.perf_counter() - t, out  # type: ignore[return-value]

    first, _ = run(step)
    best_e = best_c = float("inf")
    for _ in range(max(args.reps, 2)):
        best_e = min(best_e, run(None)[0])
        t, seqs = run(step)
        best_c = min(best_c, t)
    row = {**eager, "case": eager["case"] + "-compiled", "decode_s": float("nan"), "seqs": seqs}
    row.update(total_s=best_c / batch, warmup_s=first)
    row.update(ab_eager_s=best_e / batch, ab_compiled_s=best_c / batch)
    row.update(img_per_s=1 / row["total_s"], gflops=row["gflop"] / row["total_s"])
    row.update(same_ids=bool(torch.equal(seqs, eager["seqs"])))
    for key in ("naive_s", "step_mb", "step_launches"):  # the compiled step is not counted
        row.pop(key, None)
    return row


def precision_rows(precision: str, args: argparse.Namespace, trie: Trie) -> Iterator[dict]:
    """Every case of ``precision`` (caption at each batch size, the rest at batch 1), each row as
    soon as it is measured."""
    model = random_base(precision)
    eager = []
    for case in args.cases:
        for batch in args.batch_sizes if case == "caption" else [1]:
            if case == "caption":
                eager.append(run_case(model, precision, batch, args, case))
                yield eager[-1]
                if args.plain_linear and precision == "fp32":
                    decoder, skinny, prepack = (
                        model.decoder,
                        linear_module.SKINNY_ROWS,
                        linear_module.PREPACK,
                    )
                    decoder.project = decoder.output_projection  # type: ignore[method-assign]
                    linear_module.SKINNY_ROWS, linear_module.PREPACK = 0, False
                    yield run_case(model, precision, batch, args, "caption-F.linear")
                    del decoder.project  # back to the packed / weight-stationary products
                    linear_module.SKINNY_ROWS, linear_module.PREPACK = skinny, prepack
            elif case == "grounding":  # 4 bin tokens
                yield run_case(
                    model, precision, batch, args, case, max_new_tokens=4, min_new_tokens=4
                )
            else:  # trie-constrained VQA over 3,129 answers, 5 or 20 beams
                beams = 20 if case == "vqa20" else 5
                yield run_case(model, precision, batch, args, case, num_beams=beams, constraint_trie=trie,
                               max_new_tokens=6, min_new_tokens=0, length_penalty=0.0)  # fmt: skip
    if args.compile:  # caption rows again, the decoding step compiled (after the eager ones)
        compile_decoder(model)
        step = model.decoder.compiled_step
        assert step is not None
        for r in eager:
            yield compiled_row(model, step, r, args)


def onnx_row(
    model: OnnxOFA, net: OFA, precision: str, batch: int, args: argparse.Namespace, ref: dict
) -> dict:
    """One caption row of the ONNX Runtime ``model`` against PyTorch's ``net`` (fp32, the same
    weights; ``ref`` its caption row): the two decodings interleaved, best of ``max(reps, 2)``
    each, so that a noisy machine slows both alike (as ``compiled_row``)."""
    images, ids, gen = case_inputs(batch, args, "caption", torch.float32)
    config = GenerationConfig(**gen)
    graphs = cast(OFA, model)  # the part of OFA decoding calls (ofa_vl.onnx.runtime)
    t_enc, _ = timed(lambda: model.encode(ids, images), args.reps)

    def run(m: OFA) -> Callable[[], object]:
        return lambda: generate(m, ids, images, config=config)

    run(net)()  # warm-up (the ORT graphs were warmed by the encoder's timing)
    best_t = best_o = float("inf")
    for _ in range(max(args.reps, 2)):
        best_t = min(best_t, once(run(net))[0])
        t, out = once(run(graphs))
        best_o = min(best_o, t)
    row = {**ref, "precision": f"ort-{precision}", "resnet_s": float("nan"),
           "encoder_s": t_enc / batch, "decode_s": (best_o - t_enc) / batch,
           "total_s": best_o / batch, "img_per_s": batch / best_o}  # fmt: skip
    row.update(
        gflops=row["gflop"] / row["total_s"], vs_torch=best_t / best_o, torch_s=best_t / batch
    )
    row.update(same_as_torch=bool(torch.equal(out.sequences, ref["seqs"])))  # type: ignore[attr-defined]
    row.pop("naive_s", None)
    row.pop("same_ids", None)
    return row


def onnx_rows(args: argparse.Namespace, torch_rows: dict[int, dict]) -> Iterator[dict]:
    """Caption rows of OFA-base (the same random weights) exported to ONNX, at each of
    ``--onnx``'s precisions and batch sizes, decoded by ``generate`` through ONNX Runtime;
    ``torch_rows``: PyTorch fp32's caption row of each batch size (ratio and ids against it)."""
    task = get_task("caption", image_size=args.image_size)
    net = random_base("fp32")
    pipe = OFAPipeline(net, OFATokenizer.from_pretrained(ENGLISH_BPE), task)
    root = Path(tempfile.mkdtemp(prefix="ofa-onnx-"))
    try:
        t = time.perf_counter()
        export_onnx(pipe, root / "fp32")
        print(f"  ONNX export of OFA-base: {time.perf_counter() - t:.0f} s", flush=True)
        for precision in args.onnx:
            folder = root / precision
            if precision == "int8":
                shutil.copytree(root / "fp32", folder)
                quantize_graphs(folder)
            model = load_onnx_model(folder)
            for batch in args.batch_sizes:
                yield onnx_row(model, net, precision, batch, args, torch_rows[batch])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def print_header(args: argparse.Namespace) -> None:
    head = f"{'case':16s} {'prec':12s} {'B':>2s} {'K':>2s} {'resnet':>7s} {'encoder':>7s} {'decode':>7s} {'total/img':>9s} {'img/s':>6s} {'GFLOP':>6s} {'GFLOP/s':>7s} {'%peak':>5s} {'MB/step':>7s} {'ops/step':>8s}"
    extra = f" {'naive/img':>9s} {'vs naive':>8s} {'same ids':>8s}" if args.compare else ""
    print(head + extra, flush=True)


def print_row(r: dict, naive: dict[str, float], peak32: float, peak16: float) -> None:
    """One row; ``naive``: the naive path's s/img of each case (fp32, batch 1), measured first."""
    peak = peak16 if r["precision"] == "bf16" else peak32
    line = (f"{r['case']:16s} {r['precision']:12s} {r['batch']:2d} {r['beams']:2d} {r['resnet_s']:7.3f} {r['encoder_s']:7.3f} "
            f"{r['decode_s']:7.3f} {r['total_s']:9.3f} {r['img_per_s']:6.2f} {r['gflop']:6.1f} {r['gflops']:7.1f} {100 * r['gflops'] / peak:5.0f} "
            f"{r.get('step_mb', float('nan')):7.1f} {r.get('step_launches', float('nan')):8.0f}")  # fmt: skip
    base = r["case"].removesuffix("-compiled")
    if base in naive:
        same = str(r["same_ids"]) if "same_ids" in r else ""
        own = f"{r['naive_s']:9.3f}" if "naive_s" in r else " " * 9
        line += f" {own} {naive[base] / r['total_s']:7.1f}x {same:>8s}"
    print(line, flush=True)
    if "vs_torch" in r:
        print(f"  onnxruntime {r['precision'][4:]} batch {r['batch']}, interleaved with PyTorch fp32: "
              f"{r['total_s']:.3f} vs {r['torch_s']:.3f} s/img ({r['vs_torch']:.2f}x PyTorch's "
              f"speed); same ids as PyTorch fp32: {r['same_as_torch']}", flush=True)  # fmt: skip
    if "warmup_s" in r:
        print(f"  compiled {r['precision']} batch {r['batch']}: first call {r['warmup_s']:.1f} s "
              f"(compilation + one decoding; not in the table); eager and compiled interleaved: "
              f"{r['ab_eager_s']:.3f} vs {r['ab_compiled_s']:.3f} s/img "
              f"({r['ab_eager_s'] / r['ab_compiled_s']:.2f}x); same ids: {r['same_ids']}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32", "bf16", "int8"])
    p.add_argument("--image-size", type=int, default=480)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--reps", type=int, default=1, help="timed runs after a warm-up (best kept)")
    p.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the naive (uncached, mmpretrain-like) path at fp32 batch 1 (default on)",
    )
    p.add_argument("--compile", action="store_true", help="also time caption with a compiled step")
    p.add_argument("--cases", nargs="+", default=["caption", "grounding", "vqa5", "vqa20"])
    p.add_argument(
        "--plain-linear",
        action="store_true",
        help="also time fp32 captioning with every Linear as a plain F.linear (before)",
    )
    p.add_argument(
        "--onnx", nargs="*", choices=["fp32", "int8"], default=[],
        help="also caption through ONNX Runtime (ofa_vl.onnx export) at these precisions",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="caption only, 10 new tokens")
    p.add_argument(
        "--system-malloc", action="store_true",
        help="leave glibc's malloc as it starts (the ofa command keeps freed memory: allocator.py)",
    )  # fmt: skip
    args = p.parse_args()
    if args.quick:
        args.cases, args.new_tokens = ["caption"], 10
    torch.set_num_threads(args.threads)
    kept = not args.system_malloc and keep_freed_memory()
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    flags = cpu_flags()
    print(f"CPU flags: {' '.join(f for f in SHOWN_FLAGS if f in flags) or 'unknown'}")
    print(
        f"threads {args.threads}; freed memory kept: {'yes' if kept else 'no'}; matmul peak fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s",
        flush=True,
    )
    answers = [[0, *range(5000 + 3 * i, 5000 + 3 * i + 1 + i % 3), 2] for i in range(3129)]
    trie = Trie(answers)
    if "bf16" in args.precision and not flags & set(BF16_FLAGS) and peak16 < 0.5 * peak32:
        print(f"bf16 skipped: this CPU has none of {', '.join(BF16_FLAGS)} ({peak16:.1f} GFLOP/s, "
              f"{peak16 / peak32:.1%} of fp32); bf16 pays off on CPUs with AVX512-BF16/AMX or GPUs")  # fmt: skip
        args.precision = [p for p in args.precision if p != "bf16"]
    print_header(args)
    naive: dict[str, float] = {}
    torch_rows: dict[int, dict] = {}  # PyTorch fp32's caption row of each batch size
    for precision in args.precision:
        for row in precision_rows(precision, args, trie):
            if "naive_s" in row:
                naive[row["case"]] = row["naive_s"]
            if row["case"] == "caption" and precision == "fp32":
                torch_rows[row["batch"]] = row
            print_row(row, naive, peak32, peak16)
    if args.onnx:
        if "fp32" not in args.precision or "caption" not in args.cases:
            p.error("--onnx compares with PyTorch fp32's caption rows: keep fp32 and caption")
        for row in onnx_rows(args, torch_rows):
            print_row(row, naive, peak32, peak16)
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
