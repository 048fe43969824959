"""Load test of the HTTP service on loopback: dynamic batching against none, 1 replica against N.

    python benchmarks/load_test.py                      # the bundled model
    python benchmarks/load_test.py --model ../shared/fixtures/mmpretrain-ofa/ofa-test_seed0.pth \\
        --tokenizer ../shared/ofa-bpe/hf --image-size 256

The models are loaded once per replica; the service then runs three times in this process (uvicorn
in a thread on 127.0.0.1, a free port): ``--max-batch 1``, ``--max-batch N``, and ``--max-batch N``
with ``--replicas R`` (serve/replicas.py, one model per ``--devices`` entry). Each time, ``--clients``
concurrent clients send ``--requests`` requests each, one after the other, with pictures of the
synthetic shapes world. Bounded: clients x requests requests per run, each with a timeout, and a
deadline for the whole run. Exits 1 if any request failed or was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import torch

from ofa_vl.api import OFAPipeline
from ofa_vl.serve import ServeConfig, create_app, load_pipelines, running
from ofa_vl.serve.replicas import Replicated, replica_devices
from ofa_vl.shapes.world import generate_scene, render_scene
from ofa_vl.zoo import DEFAULT_MODEL

FIELDS: dict[str, dict[str, Any]] = {
    "caption": {},
    "grounding": {"text": "the red circle"},
    "vqa": {"question": "what is it?"},
}


@dataclass
class Run:
    max_batch: int
    replicas: int = 1
    sent: int = 0
    ok: int = 0
    failed: int = 0  # answered with an error status, or the connection failed
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    batch_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.sent - self.ok - self.failed

    def percentile(self, q: float) -> float:
        v = sorted(self.latencies)
        return v[min(len(v) - 1, int(q * len(v)))] * 1000 if v else float("nan")

    @property
    def mean_batch(self) -> float:
        batches = sum(self.batch_sizes.values())
        return sum(int(k) * n for k, n in self.batch_sizes.items()) / batches if batches else 0.0


def scenes(count: int, size: int) -> list[bytes]:
    """``count`` different PNG pictures of the shapes world."""
    out = []
    for seed in range(count):
        buf = io.BytesIO()
        render_scene(generate_scene(random.Random(seed), size)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


async def client(http: httpx.AsyncClient, run: Run, endpoint: str, images: list[bytes]) -> None:
    for image in images:
        run.sent += 1
        start = time.perf_counter()
        try:
            r = await http.post(
                f"/v1/{endpoint}", files={"image": ("x.png", image)}, data=FIELDS[endpoint]
            )
        except httpx.HTTPError:
            run.failed += 1
            continue
        if r.status_code == 200:
            run.ok += 1
            run.latencies.append(time.perf_counter() - start)
        else:
            run.failed += 1


async def load(url: str, run: Run, args: argparse.Namespace, images: list[bytes]) -> None:
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout_s, limits=limits) as http:
        per_client = [images[i :: args.clients] for i in range(args.clients)]
        start = time.perf_counter()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(client(http, run, args.endpoint, c) for c in per_client)),
                args.deadline_s,
            )
        except asyncio.TimeoutError:  # noqa: UP041  (not the builtin on Python 3.10)
            print(f"deadline of {args.deadline_s} s reached; unanswered requests count as lost")
        run.wall_s = time.perf_counter() - start
        for replica in range(run.replicas):  # the JSON report of each replica
            report = (await http.get("/metrics", params={"replica": replica})).json()
            for size, n in report["batch_sizes"].items():
                run.batch_sizes[size] = run.batch_sizes.get(size, 0) + n


def measure(
    replicas: list[dict[str, OFAPipeline]], max_batch: int, args: argparse.Namespace
) -> Run:
    config = ServeConfig(max_batch=max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=1024)
    run = Run(max_batch, len(replicas))
    images = scenes(args.clients * args.requests, args.image_px)
    apps = [create_app({"model": pipes}, config) for pipes in replicas]
    with running(apps[0] if len(apps) == 1 else Replicated(apps)) as url:
        asyncio.run(load(url, run, args, images))
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="zoo name or checkpoint path")
    p.add_argument("--tokenizer", help="tokenizer directory (for checkpoint paths)")
    p.add_argument("--image-size", type=int, help="model input size (default: the model's)")
    p.add_argument("--endpoint", default="caption", choices=sorted(FIELDS))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-batch", type=int, default=8, help="compared with --max-batch 1")
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--image-px", type=int, default=128, help="side of the uploaded pictures")
    p.add_argument("--timeout-s", type=float, default=120.0, help="per request")
    p.add_argument("--deadline-s", type=float, default=600.0, help="per run")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--replicas", type=int, default=2, help="compared with 1 replica")
    p.add_argument("--devices", help="a replica per device (cuda:0,cuda:1 or auto; default CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    options = {"image_size": args.image_size} if args.image_size else {}
    devices = replica_devices(args.devices or "cpu" + ",cpu" * (args.replicas - 1), args.replicas)
    replicas = [
        load_pipelines(args.model, tokenizer=args.tokenizer, device=d, **options) for d in devices
    ]
    for pipes in replicas:  # warm-up
        pipes[args.endpoint](scenes(1, args.image_px)[0], **FIELDS[args.endpoint])
    runs = [measure(replicas[:1], mb, args) for mb in (1, args.max_batch)]
    runs.append(measure(replicas, args.max_batch, args))

    print(f"\n{args.model} /v1/{args.endpoint}: {args.clients} clients x {args.requests} requests")
    head = ("max_batch", "replicas", "sent", "ok", "failed", "lost", "wall_s", "req/s", "p50_ms", "p99_ms", "mean_batch")  # fmt: skip
    print(" ".join(f"{h:>10}" for h in head))
    for r in runs:
        row = (r.max_batch, r.replicas, r.sent, r.ok, r.failed, r.lost, f"{r.wall_s:.2f}",
               f"{r.ok / r.wall_s:.2f}", f"{r.percentile(0.5):.0f}", f"{r.percentile(0.99):.0f}",
               f"{r.mean_batch:.2f}")  # fmt: skip
        print(" ".join(f"{v:>10}" for v in row))
    ratio = (runs[1].ok / runs[1].wall_s) / (runs[0].ok / runs[0].wall_s)
    print(f"throughput with --max-batch {args.max_batch} / --max-batch 1: {ratio:.2f}x")
    ratio = (runs[2].ok / runs[2].wall_s) / (runs[1].ok / runs[1].wall_s)
    print(f"throughput with {args.replicas} replicas / 1 replica: {ratio:.2f}x")
    return 0 if all(r.ok == args.clients * args.requests for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
