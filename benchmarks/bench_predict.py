"""Bulk captioning: ``ofa predict`` with 0 / 1 / 2 image-loading workers against the serial loop of
``ofa caption DIR`` (images loaded one by one on the main thread, every result held and printed
at the end), in the same run, on generated shapes images; and the peak resident memory of both
at two collection sizes (``ofa predict`` streams: flat; ``ofa caption`` holds every result).

    python benchmarks/bench_predict.py                           # bundled model, 2,000 images
    python benchmarks/bench_predict.py --model base --images 300 # OFA-base, random weights
    python benchmarks/bench_predict.py --images 200 --rss 200 2000 --threads 2

Every command runs whole, as a user runs it (model loading included), in this process for the
throughput and in a child process for the memory (``ru_maxrss`` of the child, its loader
workers included). The captions of every ``ofa predict`` run are checked against ``ofa caption``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ofa_vl import OFA, OFAConfig, save_pretrained
from ofa_vl.cli import main
from ofa_vl.shapes.world import generate_scene, render_scene

BUNDLED = "ofa-tiny_shapes"


def make_images(folder: Path, n: int, size: int) -> Path:
    """``n`` shapes scenes as JPEG files in one folder (``ofa caption DIR`` reads one level)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(list(folder.glob("*.jpg"))), n):
        render_scene(generate_scene(np.random.default_rng([11, i]), size)).save(
            folder / f"{i:06d}.jpg", quality=90
        )
    return folder


def model_path(name: str, tmp: Path) -> str:
    """The bundled model's name, or OFA-base with random weights written once (no download)."""
    if name == "tiny":
        return BUNDLED
    path = tmp / "ofa-base_random.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        save_pretrained(OFA(OFAConfig.from_preset("base")), path)
    return str(path)


def fresh(out: Path) -> Path:
    """``out`` and its chunk folder removed, for a new ``ofa predict`` run."""
    shutil.rmtree(f"{out}.parts", ignore_errors=True)
    out.unlink(missing_ok=True)
    return out


def timed(argv: list[str]) -> tuple[float, str]:
    """Run one ``ofa`` command here: (seconds, its stdout)."""
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    assert code == 0, argv
    return time.perf_counter() - start, out.getvalue()


def peak_rss_mb(argv: list[str]) -> float:
    """The peak resident memory of ``ofa ARGV`` in a child process (its waited-for workers too)."""
    proc = subprocess.Popen([sys.executable, "-m", "ofa_vl", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, argv
    return usage.ru_maxrss / 1024


def throughput(args: argparse.Namespace, model: str, tmp: Path) -> None:
    images = make_images(tmp / f"images{args.images}", args.images, args.size)
    common = ["--batch-size", str(args.batch_size), "--beams", str(args.beams)]
    seconds, printed = timed(["caption", str(images), "--model", model, "--json", *common])
    serial = {Path(r["image"]).name: r["pred_caption"] for r in json.loads(printed)}
    print(f"{'command':<34}{'images/s':>10}{'seconds':>10}  same captions")
    print(f"{'ofa caption DIR (serial)':<34}{args.images / seconds:>10.2f}{seconds:>10.1f}  -")
    for workers in args.workers:
        out = fresh(tmp / f"predict_{args.images}_{workers}.jsonl")
        argv = ["predict", model, str(images), "--out", str(out), "--workers", str(workers)]
        seconds, _ = timed([*argv, *common])
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        same = {Path(r["id"]).name: r["pred_caption"] for r in rows} == serial
        name = f"ofa predict --workers {workers}"
        print(f"{name:<34}{args.images / seconds:>10.2f}{seconds:>10.1f}  {same}")


def memory(args: argparse.Namespace, model: str, tmp: Path) -> None:
    print(f"\n{'peak RSS (MB)':<34}" + "".join(f"{n:>8} img" for n in args.rss))
    common = ["--batch-size", str(args.batch_size), "--beams", str(args.beams)]
    for what in ("caption", "predict"):
        peaks = []
        for n in args.rss:
            images = str(make_images(tmp / f"images{n}", n, args.size))
            if what == "caption":
                argv = ["caption", images, "--model", model, "--json"]
            else:
                argv = ["predict", model, images, "--out", str(fresh(tmp / f"rss{n}.jsonl")),
                        "--workers", "2", "--chunk-size", "256"]  # fmt: skip
            peaks.append(peak_rss_mb([*argv, *common]))
        label = "ofa caption DIR" if what == "caption" else "ofa predict --workers 2"
        print(f"{label:<34}" + "".join(f"{p:>12.0f}" for p in peaks))


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=["tiny", "base"], default="tiny")
    p.add_argument("--images", type=int, default=2000, help="images for the throughput")
    p.add_argument("--size", type=int, default=256, help="side of the generated images")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--rss", type=int, nargs="*", default=[200, 2000], help="collection sizes")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--tmp", help="where the images go (kept; default a new temporary folder)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the child processes of the RSS runs
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-predict-"))
    model = model_path(args.model, tmp)
    print(f"model {model}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"beams {args.beams}, {args.size} px images")  # fmt: skip
    throughput(args, model, tmp)
    if args.rss:
        memory(args, model, tmp)


if __name__ == "__main__":
    run()
