"""Bad input, faults and hostile clients (issue 17), one section per class of failure:

1. runs mixed or duplicated (run-folder lock, weights fingerprint), 2. downloads cut off,
3. results thrown away (per-file errors), 4. one request failing its neighbours (batcher),
5. slow clients (request deadline), 6. unbounded cost (bounds from the model and the machine),
7. 500s for client errors, 8. tracebacks for user errors, 9. bad values accepted, 10. cosmetic.

Everything runs on a tiny random OFA (English BPE, 128 positions) made here, on loopback only.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import http.server
import io
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from ofa_vl.checkpoints import CheckpointError, load_model, save_pretrained
from ofa_vl.cli import main
from ofa_vl.config import OFAConfig
from ofa_vl.errors import OFAError, OFARuntimeError, OFAValueError, describe, is_user_error
from ofa_vl.evaluate import RUN_SETTINGS, EvalConfig, evaluate
from ofa_vl.images import ImageError, load_image
from ofa_vl.model import OFA
from ofa_vl.options import check_decoding, check_threads, max_image_pixels
from ofa_vl.runs import RunLock, weights_fingerprint, write_atomic
from ofa_vl.serve import Batcher, ServeConfig, create_app, load_pipelines, running
from ofa_vl.serve.app import served_name
from ofa_vl.tokenizer import OFATokenizer
from ofa_vl.zoo import DownloadError, download

TINY = dict(
    embed_dim=32, encoder_layers=1, decoder_layers=1, num_heads=2, resnet_layers=(1, 1, 1),
    resnet_width=8, max_positions=128, image_bucket_size=8,
)  # fmt: skip
FAST = ["--beams", "1", "--max-new-tokens", "2", "--device", "cpu"]


def make_model(folder: Path, seed: int = 0) -> Path:
    """A random tiny OFA with the English BPE, 64 px, saved as a model folder."""
    tok = OFATokenizer.english()
    torch.manual_seed(seed)
    model = OFA(OFAConfig(vocab_size=len(tok), **TINY))  # type: ignore[arg-type]
    save_pretrained(model, folder / "model.safetensors")
    tok.save_pretrained(folder)
    (folder / "pipeline.json").write_text(
        json.dumps({"image_size": 64, "interpolation": "bilinear"})
    )
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny"))


def png(color: str = "red", size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def ofa_on_an_image(tiny: Path, tmp_path: Path, *args: str, command: str = "caption") -> int:
    """``ofa COMMAND a.png --model TINY ARGS...`` in this process, on a fresh red image."""
    (tmp_path / "a.png").write_bytes(png())
    return main([command, str(tmp_path / "a.png"), "--model", str(tiny), *args])


def one_line_error(capsys: pytest.CaptureFixture[str], status: int, needle: str) -> None:
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ofa: error: ") and needle in lines[0], err


# --------------------------------------------------------------------------- 1. runs mixed
def test_a_run_folder_takes_one_run_at_a_time(tmp_path: Path) -> None:
    with (
        RunLock(tmp_path / "run", "ofa test"),
        pytest.raises(OFARuntimeError, match=rf"in use by another ofa test \(pid {os.getpid()}\)"),
        RunLock(tmp_path / "run", "ofa test"),
    ):
        pass
    with RunLock(tmp_path / "run", "ofa test"):  # released at the end of the block
        pass


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ofa_vl.shapes.world import write_shapes_dataset

    root = tmp_path_factory.mktemp("coco")
    write_shapes_dataset(root, 1, 4, seed=0, size=64)
    return root


def test_concurrent_ofa_test_on_one_folder_is_refused(
    shapes: Path, tiny: Path, tmp_path: Path
) -> None:
    with RunLock(tmp_path, "ofa test"), pytest.raises(OFAError, match="in use by another"):
        evaluate(
            str(tiny),
            EvalConfig(
                "coco-caption",
                shapes,
                "val",
                out=tmp_path,
                limit=2,
                workers=0,
                device="cpu",
                progress=False,
            ),
        )
    assert not (tmp_path / "predictions.jsonl").exists()


@pytest.mark.slow
def test_resume_with_other_weights_is_refused(shapes: Path, tiny: Path, tmp_path: Path) -> None:
    run = dict(dataset="coco-caption", data_root=shapes, split="val", out=tmp_path / "run",
               workers=0, device="cpu", progress=False, generation={"num_beams": 1, "max_new_tokens": 2})  # fmt: skip
    evaluate(str(tiny), EvalConfig(limit=2, **run))  # type: ignore[arg-type]
    recorded = json.loads((tmp_path / "run" / RUN_SETTINGS).read_text())["weights"]
    digest = hashlib.sha256((tiny / "model.safetensors").read_bytes()).hexdigest()
    assert recorded == f"sha256:{digest}"
    other = make_model(tmp_path / "other", seed=1)  # same name, other weights
    with pytest.raises(OFAValueError, match="weights"):
        evaluate(
            str(tiny),
            EvalConfig(limit=4, resume=True, pretrained=other / "model.safetensors", **run),
        )  # type: ignore[arg-type]
    assert evaluate(str(tiny), EvalConfig(limit=4, resume=True, **run)).samples == 4  # type: ignore[arg-type]


def test_weights_fingerprint_is_cached_and_follows_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path / "home"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights one")
    first = weights_fingerprint(f)
    assert first == "sha256:" + hashlib.sha256(b"weights one").hexdigest()
    assert str(f.resolve()) in json.loads((tmp_path / "home" / "fingerprints.json").read_text())
    f.write_bytes(b"weights two!")  # other size: rehashed
    assert weights_fingerprint(f) == "sha256:" + hashlib.sha256(b"weights two!").hexdigest()


# --------------------------------------------------------------------------- 2. downloads
class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files``; ``/cut/...`` declares the full length and stops halfway."""

    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802
        if "Range" in self.headers:  # no resuming here: a cut download must fail
            self.send_response(416)
            self.end_headers()
            return
        cut = self.path.startswith("/cut/")
        data = self.files.get(self.path.removeprefix("/cut"))
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if cut else data)
        if cut:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def file_server(files: dict[str, bytes]) -> Iterator[str]:
    handler = type("Handler", (_Files,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_a_download_cut_off_is_never_cached(tmp_path: Path) -> None:
    blob = os.urandom(50_000)
    with file_server({"/x.pth": blob}) as url:
        with pytest.raises(DownloadError, match="cannot download"):
            download(f"{url}/cut/x.pth", tmp_path, progress=False)
        assert list(tmp_path.iterdir()) == []  # no partial file, under any name
        assert download(f"{url}/x.pth", tmp_path, progress=False).read_bytes() == blob


def test_a_download_with_the_wrong_hash_is_never_cached(tmp_path: Path) -> None:
    name = "w_20230418-deadbeef.pth"
    with (
        file_server({f"/{name}": b"not those bytes"}) as url,
        pytest.raises(DownloadError, match="does not match the deadbeef"),
    ):
        download(f"{url}/{name}", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_url_given_as_model_is_downloaded(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path))
    with file_server({"/m.safetensors": (tiny / "model.safetensors").read_bytes()}) as url:
        with pytest.raises(DownloadError, match="HTTP|404|Not Found"):  # fetched, not a path
            load_model(f"{url}/missing.pth")
        model = load_model(f"{url}/m.safetensors")
    assert model.cfg.max_positions == 128
    assert model.weights_file == tmp_path / "checkpoints" / "m.safetensors"


def test_an_unwritable_cache_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path / "file" / "home"))
    with pytest.raises(DownloadError, match="set OFA_VL_HOME to a writable folder"):
        download("http://127.0.0.1:9/x.pth", progress=False)


# --------------------------------------------------------------------------- 3. results thrown away
def test_one_unreadable_file_keeps_the_results_of_the_others(
    tiny: Path, tmp_path: Path, capsys
) -> None:
    for i, color in enumerate(("red", "blue", "green")):
        (tmp_path / f"im{i}.png").write_bytes(png(color))
    (tmp_path / "im1.png").write_bytes(b"broken")
    status = main(["caption", str(tmp_path), "--model", str(tiny), "--json", *FAST])
    out, err = capsys.readouterr()
    assert status == 1
    assert [Path(r["image"]).name for r in json.loads(out)] == ["im0.png", "im2.png"]
    assert "im1.png is not a readable image" in err and "1 of 3 images failed" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_batch_size_below_one_is_refused(tiny: Path, tmp_path: Path, capsys, value: str) -> None:
    status = ofa_on_an_image(tiny, tmp_path, "--batch-size", value, *FAST)
    one_line_error(capsys, status, f"batch-size must be at least 1, got {value}")


# --------------------------------------------------------------------------- 4. batch neighbours
def test_a_failing_request_fails_alone_in_its_batch() -> None:
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(items)
        if 13 in items:
            raise ValueError("unlucky")
        return [i * 10 for i in items]

    async def scenario() -> list[Any]:
        batcher = Batcher(max_batch=4, max_wait_s=0.5, max_queue=8)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit("k", fn, i) for i in (1, 13, 2)),
                                       return_exceptions=True)  # fmt: skip
        await batcher.close()
        assert batcher.retried == 1
        return list(results)

    one, bad, two = asyncio.run(scenario())
    assert (one, two) == (10, 20) and isinstance(bad, ValueError)
    assert calls == [[1, 13, 2], [1], [13], [2]]


@pytest.fixture(scope="module")
def pipes(tiny: Path) -> dict[str, Any]:
    return load_pipelines(tiny, generation={"num_beams": 1, "max_new_tokens": 2})


def post(c: Any, endpoint: str = "vqa", **fields: Any) -> Any:
    return c.post(f"/v1/{endpoint}", files={"image": ("a.png", png(), "image/png")}, data=fields)


def test_a_question_too_long_in_tokens_is_422_and_its_batch_neighbours_are_answered(pipes) -> None:
    long = " ".join(["zq"] * 200)  # under the 1000-character cap, over 128 positions
    assert len(long) < 1000
    from concurrent.futures import ThreadPoolExecutor

    app = create_app({"tiny": pipes}, ServeConfig(max_batch=4, batch_wait_ms=300))
    with TestClient(app) as c, ThreadPoolExecutor(3) as pool:
        good = [pool.submit(post, c, question=f"what is {i}?") for i in range(2)]
        bad = pool.submit(post, c, question=long)
        assert bad.result().status_code == 422
        assert "reads at most 128" in bad.result().json()["error"]["message"]
        assert [g.result().status_code for g in good] == [200, 200]


def test_the_batcher_retry_answers_neighbours_of_a_request_failing_in_the_model(pipes) -> None:
    class Picky(type(pipes["vqa"])):  # type: ignore[misc]
        def predict_prepared(self, images, items, config):  # type: ignore[no-untyped-def]
            if any(it.fields.question.startswith("poison") for it in items):
                raise OFAValueError("this question cannot be answered")
            return super().predict_prepared(images, items, config)

    from concurrent.futures import ThreadPoolExecutor

    picky = {**pipes, "vqa": Picky(**vars(pipes["vqa"]))}
    app = create_app({"tiny": picky}, ServeConfig(max_batch=3, batch_wait_ms=300))
    with TestClient(app) as c, ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda q: post(c, question=q), ["one?", "poison?", "two?"]))
        assert [r.status_code for r in replies] == [200, 422, 200]
        assert c.get("/metrics").json()["requests"]["/v1/vqa"] == {"200": 2, "422": 1}


# --------------------------------------------------------------------------- 5. slow clients
def wait_for_count(http: Any, path: str, status: str) -> dict[str, int]:
    """The /metrics counts of ``path`` once ``status`` is among them."""
    deadline = time.monotonic() + 10
    while status not in (counts := http.get("/metrics").json()["requests"].get(path, {})):
        assert time.monotonic() < deadline, counts
        time.sleep(0.05)
    return dict(counts)


def _read_all(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        pass
    return data


@pytest.mark.slow
def test_slow_clients_get_408_and_good_ones_are_served(pipes) -> None:
    import httpx

    app = create_app({"tiny": pipes}, ServeConfig(read_timeout_s=1.0))
    with running(app) as url:
        port = int(url.rsplit(":", 1)[1])
        headers = socket.create_connection(("127.0.0.1", port))
        headers.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\n")  # half the headers
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"image\": \"")  # fmt: skip
        with httpx.Client(base_url=url, timeout=30) as http:
            assert post(http, "caption").status_code == 200  # served meanwhile
            for sock in (headers, body):
                reply = _read_all(sock, 10)  # the deadline closes the connection
                assert reply.startswith(b"HTTP/1.1 408 "), reply
                sock.close()
            counts = wait_for_count(http, "/v1/caption", "408")
        assert counts == {"200": 1, "408": 1}  # the slow body is the client's fault, not a 500


@pytest.mark.slow
def test_a_stalled_upload_does_not_hold_the_server_at_shutdown(pipes) -> None:
    import uvicorn

    from ofa_vl.serve.app import server_config

    app = create_app({"tiny": pipes}, ServeConfig(read_timeout_s=1.0, timeout_s=2.0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    stalled = socket.create_connection(sock.getsockname())
    stalled.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\nab")
    time.sleep(0.2)
    server.should_exit = True
    thread.join(timeout=20)
    assert not thread.is_alive()
    stalled.close()
    sock.close()


# --------------------------------------------------------------------------- 6. unbounded cost
def test_beams_are_bounded_by_the_machines_memory(tiny: Path) -> None:
    cfg = load_model(tiny).cfg
    check_decoding(
        {"num_beams": 8, "max_new_tokens": 20}, cfg, source_len=20, device=torch.device("cpu")
    )
    with pytest.raises(OFAValueError, match="GiB of decoder cache"):
        check_decoding({"num_beams": 10**9, "max_new_tokens": 20}, cfg, source_len=20,
                       device=torch.device("cpu"))  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_beams_are_bounded_by_the_gpus_memory(tiny: Path) -> None:
    model = load_model(tiny, device="cuda")
    image = torch.zeros(1, 3, 64, 64, device="cuda")
    ids = torch.tensor([[0, 100, 2]], device="cuda")
    with pytest.raises(OFAValueError, match="GiB of decoder cache"):
        model.generate(ids, image, num_beams=10**7, max_new_tokens=100)
    assert model.generate(ids, image, num_beams=4, max_new_tokens=3).shape[0] == 1


def test_threads_are_bounded_by_the_cores(tiny: Path, tmp_path: Path, capsys) -> None:
    assert check_threads(1) == 1
    with pytest.raises(OFAValueError, match="this machine's cores"):
        check_threads((os.cpu_count() or 1) + 1)
    status = ofa_on_an_image(tiny, tmp_path, "--threads", "100000", *FAST)
    one_line_error(capsys, status, "threads must be between 1 and")


def test_the_service_pixel_cap_follows_the_decoding_cost(pipes) -> None:
    from test_serve import png_header  # a header declaring a size, nothing to decode

    cap = ServeConfig().max_pixels
    assert cap == min(max_image_pixels(), 89_478_485) and cap < 81_000_000
    with TestClient(create_app({"tiny": pipes})) as c:
        r = c.post("/v1/caption", files={"image": ("big.png", png_header(9000, 9000))})
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


# --------------------------------------------------------------------------- 7. 500s for client errors
def test_deeply_nested_json_is_400(pipes) -> None:
    with TestClient(create_app({"tiny": pipes})) as c:
        r = c.post(
            "/v1/caption", content=b"[" * 100_000, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    "error", [NotImplementedError("DDS pixel format"), IndexError("x"), KeyError("y")]
)
def test_any_decoder_failure_is_an_unreadable_image(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(Image, "open", explode)
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"DDS fuzzed")


def test_a_client_leaving_mid_body_is_counted_as_the_clients(pipes) -> None:
    import httpx

    app = create_app({"tiny": pipes})
    with running(app) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n{\"image\"")  # fmt: skip
        time.sleep(0.3)
        sock.close()
        with httpx.Client(base_url=url, timeout=30) as http:
            assert wait_for_count(http, "/v1/caption", "499") == {"499": 1}


# --------------------------------------------------------------------------- 8. one line, not a traceback
def test_invalid_utf8_in_a_question_is_one_line(tiny: Path, tmp_path: Path, capsys) -> None:
    question = b"what \xff?".decode("utf-8", "surrogateescape")  # as argv holds it
    status = ofa_on_an_image(tiny, tmp_path, "--question", question, *FAST, command="vqa")
    one_line_error(capsys, status, "is not valid UTF-8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tiny: Path, tmp_path: Path, capsys) -> None:
    status = ofa_on_an_image(tiny, tmp_path, "--device", "cuda")
    one_line_error(capsys, status, "no CUDA device is available")


def test_a_tokenizer_file_is_one_line(tiny: Path, tmp_path: Path, capsys) -> None:
    status = ofa_on_an_image(tiny, tmp_path, "--tokenizer", str(tiny / "tokenizer.json"), *FAST)
    one_line_error(capsys, status, "is a file; expected a directory")


def test_convert_onto_a_directory_is_one_line_and_leaves_nothing(
    tiny: Path, tmp_path: Path, capsys
) -> None:
    dest = tmp_path / "out.safetensors"
    dest.mkdir()
    one_line_error(capsys, main(["convert", str(tiny), str(dest)]), "is a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
    tiny: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import safetensors.torch

    def full(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    one_line_error(
        capsys,
        main(["convert", str(tiny), str(tmp_path / "m.safetensors")]),
        "No space left on device",
    )
    assert list(tmp_path.iterdir()) == []
    assert is_user_error(OSError(errno.EROFS, "Read-only file system"))
    assert not is_user_error(OSError(errno.EBADF, "Bad file descriptor"))  # a bug: traceback
    assert (
        describe(OSError(errno.ENOSPC, "No space left on device", "/x"))
        == "/x: No space left on device"
    )


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa_vl.cli

    def broken(args: Any) -> int:
        raise ValueError("a plain ValueError is a bug, not the user's")

    configure, _ = ofa_vl.cli.COMMANDS["models"]
    monkeypatch.setitem(ofa_vl.cli.COMMANDS, "models", (configure, broken))
    with pytest.raises(ValueError, match="a bug"):
        main(["models"])


def test_an_out_that_is_a_file_is_one_line(
    shapes: Path, tiny: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "taken").write_text("x")
    status = main(["test", str(tiny), "--dataset", "coco-caption", "--data-root", str(shapes), "--split", "val",
                   "--out", str(tmp_path / "taken"), "--device", "cpu", "--workers", "0"])  # fmt: skip
    one_line_error(capsys, status, "is a file; give a folder for the run")


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [("--accum", "0", "accum must be at least 1"), ("--save-every", "-1", "save-every must be"),
     ("--log-every", "0", "log-every must be"), ("--steps", "0", "steps must be at least 1"),
     ("--batch-size", "-2", "batch-size must be"), ("--ema", "2", "ema must be in [0, 1)"),
     ("--image-size", "0", "image size must be at least")],
)  # fmt: skip
def test_bad_training_options_are_one_line(
    tmp_path: Path, capsys, flag: str, value: str, needle: str
) -> None:
    status = main(
        [
            "train",
            "--task",
            "caption",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            flag,
            value,
        ]
    )
    one_line_error(capsys, status, needle)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_a_negative_port_is_one_line(capsys) -> None:
    one_line_error(capsys, main(["serve", "--port", "-5"]), "port must be between 0 and 65535")


# --------------------------------------------------------------------------- 9. bad values
@pytest.mark.parametrize(
    ("flag", "value"), [("--beams", "0"), ("--beams", "-1"), ("--max-new-tokens", "0")]
)
def test_decoding_values_below_one_are_refused(
    tiny: Path, tmp_path: Path, capsys, flag: str, value: str
) -> None:
    status = ofa_on_an_image(tiny, tmp_path, *FAST, flag, value)  # the last value wins
    one_line_error(capsys, status, f"must be at least 1, got {value}")


def test_min_new_tokens_above_max_new_tokens_is_422(pipes) -> None:
    with TestClient(create_app({"tiny": pipes})) as c:
        r = post(c, "generate", prompt="what is it?", min_new_tokens=5, max_new_tokens=3)
        assert (
            r.status_code == 422
            and "must not exceed max_new_tokens" in r.json()["error"]["message"]
        )
        r = post(
            c, "generate", prompt="what is it?", min_new_tokens=5
        )  # above the model's default 2
        assert r.status_code == 422


def test_shapes_counts_below_zero_are_refused(tmp_path: Path, capsys) -> None:
    one_line_error(
        capsys,
        main(["data", "shapes", "--out", str(tmp_path), "--train", "-5"]),
        "train must be at least 0",
    )


def test_a_checkpoint_full_of_nan_is_refused(tiny: Path, tmp_path: Path) -> None:
    model = load_model(tiny)
    with torch.no_grad():
        model.embed_tokens.weight[5].fill_(float("nan"))
    save_pretrained(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(tmp_path / "nan.safetensors")


# --------------------------------------------------------------------------- 10. cosmetic
def test_messages_name_the_input_not_a_file_object() -> None:
    with pytest.raises(ImageError) as err:
        load_image(b"no image at all")
    assert "object at 0x" not in str(err.value) and "unknown format" in str(err.value)


def test_a_served_model_is_named_without_its_path(tiny: Path) -> None:
    assert served_name(tiny / "model.safetensors") == tiny.name
    assert served_name(tiny) == tiny.name
    assert served_name("ofa-tiny_shapes") == "ofa-tiny_shapes"
    assert served_name(tiny, {tiny.name: None}) == f"{tiny.name}-2"


def test_written_files_follow_the_umask(tiny: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "s.json", "{}")
        save_pretrained(load_model(tiny), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    for name in ("s.json", "m.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_no_matching_model_says_so(capsys) -> None:
    assert main(["models", "zzz*"]) == 1
    assert "no model matches pattern 'zzz*'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the replay script
@pytest.mark.slow
@pytest.mark.multiprocess
def test_hostile_clients_replay_against_ofa_serve() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "hostile_clients.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(script), "--good", "4", "--slow", "4", "--deadline-s", "200"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "all good clients served, all bad ones refused" in r.stdout
