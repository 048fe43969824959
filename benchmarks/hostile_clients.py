"""Replay hostile clients against ``ofa serve`` on loopback; bounded in count and time.

    python benchmarks/hostile_clients.py                 # a tiny random model made here
    python benchmarks/hostile_clients.py --model ofa-tiny_shapes --good 16 --slow 32

Starts ``ofa serve`` (a subprocess on 127.0.0.1, a free port, ``--read-timeout-s`` short), then
sends at once:

* ``good``: well-formed requests, expected 200;
* ``slow-headers``: half the request headers, then nothing (expected 408, or a closed connection);
* ``slow-body``: the headers and half the body, then nothing (expected 408);
* ``poison``: requests sent into the good requests' batching window that must fail alone: a
  prompt too long in tokens for the model, ``min_new_tokens`` over ``max_new_tokens``, a corrupt
  image, deeply nested JSON (expected 4xx, their neighbours 200);
* ``oversized``: an upload over ``--max-upload-mb`` and an image header over the pixel cap (413);

then SIGTERM with one upload stalled mid-body: the server must exit by itself. Every socket has a
timeout, the whole replay a deadline; the script stops by itself. Prints one line per kind and
exits 0 when every good request got 200, every bad one a 4xx (or, for slow headers, a closed
connection), no request got a 5xx, and the server exited.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

ANSWERED = "answered"


def tiny_model(folder: Path) -> Path:
    """A random OFA with the English BPE and 128 text positions (a question can be too long)."""
    import torch

    from ofa_vl.checkpoints import save_pretrained
    from ofa_vl.config import OFAConfig
    from ofa_vl.model import OFA
    from ofa_vl.tokenizer import OFATokenizer

    tok = OFATokenizer.english()
    torch.manual_seed(0)
    cfg = OFAConfig(vocab_size=len(tok), embed_dim=32, encoder_layers=1, decoder_layers=1,
                    num_heads=2, resnet_layers=(1, 1, 1), resnet_width=8, max_positions=128,
                    image_bucket_size=8)  # fmt: skip
    save_pretrained(OFA(cfg), folder / "model.safetensors")
    tok.save_pretrained(folder)
    (folder / "pipeline.json").write_text(
        json.dumps({"image_size": 64, "interpolation": "bilinear"})
    )
    return folder


def png(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buf, "PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def body(image: bytes, **fields: object) -> bytes:
    return json.dumps({"image": base64.b64encode(image).decode(), **fields}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_request(port: int, data: bytes, wait_s: float) -> str:
    """Send ``data`` and nothing more; the status line the server answers, or how it ended."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
            sock.sendall(data)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except TimeoutError:
        return "no answer"
    except OSError:
        return "closed"
    if not reply:
        return "closed"
    return reply.split(b"\r\n", 1)[0].split(b" ")[1].decode()


def post(http: httpx.Client, endpoint: str, content: bytes) -> str:
    try:
        r = http.post(
            f"/v1/{endpoint}", content=content, headers={"content-type": "application/json"}
        )
    except httpx.HTTPError as err:
        return type(err).__name__
    return str(r.status_code)


def start_server(
    args: argparse.Namespace, model: str, port: int, log: io.BufferedWriter
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ofa_vl", "serve", "--model", model, "--port", str(port),
           "--device", "cpu", "--read-timeout-s", str(args.read_timeout_s), "--timeout-s", "30",
           "--max-batch", "8", "--batch-wait-ms", "300", "--max-upload-mb", "1"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def wait_ready(url: str, server: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ofa serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("ofa serve did not start in time")


def replay(args: argparse.Namespace, port: int) -> dict[str, Counter[str]]:
    """Every kind of client at once; kind -> status counts."""
    url = f"http://127.0.0.1:{port}"
    wait = args.read_timeout_s + 15  # a slow client's answer comes after the read timeout
    long_question = " ".join(["zq"] * 300)  # 899 characters, under the 1000 cap; ~600 tokens
    jobs: list[tuple[str, Callable[[httpx.Client], str]]] = []
    head = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    good = body(png(), prompt="what color is it?", max_new_tokens=3)
    for _ in range(args.slow):
        jobs.append(("slow-headers", lambda _h: raw_request(port, head, wait)))
        partial = head + b"Content-Length: %d\r\n\r\n" % len(good) + good[: len(good) // 2]
        jobs.append(("slow-body", lambda _h, p=partial: raw_request(port, p, wait)))
    for i in range(args.good):
        q = body(png(), prompt=f"what color is shape {i}?", max_new_tokens=3)
        jobs.append(("good", lambda h, q=q: post(h, "generate", q)))
    poison = [  # the first shares the good requests' batch key (same endpoint and options)
        ("generate", body(png(), prompt=long_question, max_new_tokens=3)),
        ("generate", body(png(), prompt="what is it?", min_new_tokens=9, max_new_tokens=3)),
        ("vqa", body(b"\x89PNG\r\n\x1a\n not really", question="what?")),
        ("vqa", b"[" * 50_000),
    ]
    jobs += [("poison", lambda h, e=e, c=c: post(h, e, c)) for e, c in poison]
    oversized = [body(os.urandom(2 * 2**20)), body(png_header(20_000, 20_000))]
    jobs += [("oversized", lambda h, c=c: post(h, "caption", c)) for c in oversized]
    results: dict[str, Counter[str]] = {}
    lock = threading.Lock()
    with httpx.Client(base_url=url, timeout=wait) as http, ThreadPoolExecutor(len(jobs)) as pool:

        def run(kind: str, fn: Callable[[httpx.Client], str]) -> None:
            status = fn(http)
            with lock:
                results.setdefault(kind, Counter())[status] += 1

        list(pool.map(lambda job: run(*job), jobs))
    return results


def judge(results: dict[str, Counter[str]]) -> bool:
    ok = True
    for kind, counts in sorted(results.items()):
        if kind == "good":
            fine = set(counts) == {"200"}
        elif kind == "slow-headers":
            fine = set(counts) <= {"408", "closed"}
        else:
            fine = all(s.isdigit() and 400 <= int(s) < 500 for s in counts)
        ok &= fine
        print(
            f"{kind:13s} {sum(counts.values()):4d} requests  {dict(sorted(counts.items()))}  {'ok' if fine else 'FAIL'}"
        )
    return ok


def stop_with_a_stalled_upload(server: subprocess.Popen[bytes], port: int, bound_s: float) -> bool:
    """SIGTERM while one upload is stalled mid-body: the server must exit within ``bound_s``."""
    stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
    stalled.sendall(b'POST /v1/vqa HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n{"im')
    time.sleep(0.3)
    server.send_signal(signal.SIGTERM)
    start = time.monotonic()
    try:
        server.wait(timeout=bound_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        print(
            f"shutdown      still running {bound_s:.0f} s after SIGTERM with a stalled upload  FAIL"
        )
        return False
    finally:
        stalled.close()
    print(
        f"shutdown      exited {time.monotonic() - start:.1f} s after SIGTERM with a stalled upload  ok"
    )
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="zoo name or checkpoint (default: a tiny random model)")
    p.add_argument("--good", type=int, default=8, help="well-formed requests")
    p.add_argument("--slow", type=int, default=16, help="slow-header and slow-body clients, each")
    p.add_argument(
        "--read-timeout-s", type=float, default=2.0, help="the server's request deadline"
    )
    p.add_argument("--deadline-s", type=float, default=240.0, help="bound on the whole replay")
    args = p.parse_args()
    if not (1 <= args.good <= 256 and 0 <= args.slow <= 256):
        p.error("--good must be in 1..256 and --slow in 0..256 (a bounded replay)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_model(Path(tmp)))
        port = free_port()
        log = Path(tmp) / "serve.log"
        with log.open("wb") as sink:
            server = start_server(args, model, port, sink)
        try:
            wait_ready(f"http://127.0.0.1:{port}", server, log, start + args.deadline_s / 2)
            timer = threading.Timer(args.deadline_s, server.kill)  # the replay's hard bound
            timer.start()
            try:
                ok = judge(replay(args, port))
                ok &= stop_with_a_stalled_upload(server, port, args.read_timeout_s + 35)
            finally:
                timer.cancel()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    print(f"{'all good clients served, all bad ones refused' if ok else 'FAILED'} "
          f"in {time.monotonic() - start:.0f} s")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
