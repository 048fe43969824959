"""The HTTP service: every endpoint (multipart and base64 JSON), every error answer, dynamic
batching, responsiveness during a long batch, the OpenAPI schema, the CLI, and the web page in a
real browser (headless Debian chromium driven by Playwright)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MMP_CKPT
from fastapi.testclient import TestClient
from PIL import Image

from ofa_vl.api import OFAPipeline
from ofa_vl.metrics import box_iou
from ofa_vl.serve import Batcher, QueueFullError, ServeConfig, create_app, load_pipelines, running
from ofa_vl.serve.reports import ErrorResponse
from ofa_vl.shapes.world import generate_scene, render_scene
from ofa_vl.tokenizer import ENGLISH_BPE
from ofa_vl.zoo import DEFAULT_MODEL

HF_DIR = ENGLISH_BPE
Reply = Any  # an httpx response, or an httpx2 one from Starlette's TestClient
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
FIELDS: dict[str, dict[str, Any]] = {
    "caption": {},
    "grounding": {"text": "the red circle"},
    "ocr": {},
    "vqa": {"question": "what color is the square?"},
    "generate": {"prompt": "what does the image describe?", "max_new_tokens": 3},
}
RESULT_KEYS = {
    "caption": {"caption"},
    "grounding": {"text", "boxes"},
    "ocr": {"text"},
    "vqa": {"question", "answer"},
    "generate": {"prompt", "text", "boxes", "labels"},
}


def scene_png(seed: int = 0, size: int = 128) -> bytes:
    """A picture of the synthetic shapes world, PNG-encoded."""
    buf = io.BytesIO()
    render_scene(generate_scene(random.Random(seed), size)).save(buf, "PNG")
    return buf.getvalue()


PNG = scene_png()
B64 = base64.b64encode(PNG).decode()
_OBJECT = generate_scene(random.Random(0), 128).objects[0]
REFERENT = f"the {_OBJECT.colour} {_OBJECT.shape}"  # an object of PNG's scene: the model boxes it


def png_header(width: int, height: int) -> bytes:
    """A valid PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def pipelines() -> dict[str, OFAPipeline]:
    """The fixture network behind every endpoint: 64-pixel images, 2 beams, 4 new tokens."""
    return load_pipelines(
        MMP_CKPT, tokenizer=HF_DIR, image_size=64, generation={"num_beams": 2, "max_new_tokens": 4}
    )


@contextmanager
def serving(pipes: dict[str, OFAPipeline], **config: Any) -> Iterator[TestClient]:
    with TestClient(create_app({"fixture": pipes}, ServeConfig(**config))) as client:
        yield client


@pytest.fixture(scope="module")
def client(pipelines: dict[str, OFAPipeline]) -> Iterator[TestClient]:
    with serving(pipelines) as c:
        yield c


@dataclass
class GatedPipeline(OFAPipeline):
    """Holds every batch until ``gate`` opens: a long batch on demand."""

    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def predict_prepared(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().predict_prepared(*args, **kwargs)


@pytest.fixture
def gated(
    pipelines: dict[str, OFAPipeline],
) -> Iterator[tuple[dict[str, OFAPipeline], GatedPipeline]]:
    gate = GatedPipeline(**vars(pipelines["caption"]))
    yield {**pipelines, "caption": gate}, gate
    gate.gate.set()


def post(client: TestClient | httpx.Client, endpoint: str, **fields: Any) -> Reply:
    return client.post(
        f"/v1/{endpoint}", files={"image": ("scene.png", PNG, "image/png")}, data=fields
    )


def error_of(response: Reply) -> str:
    """The error code of a JSON error answer (checked against the schema)."""
    return ErrorResponse.model_validate(response.json()).error.code


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# --------------------------------------------------------------------------- happy paths
@pytest.mark.parametrize("encoding", ["multipart", "json"])
@pytest.mark.parametrize("endpoint", list(FIELDS))
def test_endpoint(client: TestClient, endpoint: str, encoding: str) -> None:
    fields = FIELDS[endpoint]
    if encoding == "json":
        r = client.post(f"/v1/{endpoint}", json={"image": B64, **fields, "model": "fixture"})
    else:
        r = post(client, endpoint, **fields)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body.pop(k) for k in ("model", "width", "height")} == {
        "model": "fixture", "width": 128, "height": 128,
    }  # fmt: skip
    score = body.pop("score")  # the model's own log-probability of its answer
    assert isinstance(score, float) and score <= 0, score
    assert 0 <= body.pop("confidence") <= 1 and body.pop("n_best") is None  # issue 27
    assert set(body) == RESULT_KEYS[endpoint]
    for key in ("text", "question", "prompt"):
        if key in fields:
            assert body[key] == fields[key]  # echoed from the task result: the batch kept order


def test_generate_reads_boxes_and_data_urls(client: TestClient) -> None:
    r = client.post(
        "/v1/generate",
        json={"image": f"data:image/png;base64,{B64}", "prompt": "which region?", "boxes": True},
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["boxes"], list) and isinstance(r.json()["labels"], list)


def test_n_best_over_http(client: TestClient) -> None:
    """``n_best``: the n best answers, best first, the first the answer itself."""
    body = post(client, "caption", n_best=2).json()  # the fixture pipelines decode 2 beams
    alts = body["n_best"]
    assert len(alts) == 2 and alts[0]["caption"] == body["caption"] != alts[1]["caption"]
    assert alts[0]["score"] == body["score"] and alts[0]["confidence"] == body["confidence"]
    assert [a["score"] for a in alts] == sorted((a["score"] for a in alts), reverse=True)
    assert post(client, "caption", n_best=3).status_code == 422  # more than the beams


def test_generate_params_split_into_task_fields_and_decoding_options() -> None:
    from ofa_vl.serve.service import ENDPOINTS

    spec = ENDPOINTS["generate"]
    given = {"prompt": " a ", "num_beams": 1, "max_new_tokens": 3, "boxes": True, "n_best": 1}
    fields, decoding = spec.split(spec.params.model_validate(given))
    assert decoding == {"num_beams": 1, "max_new_tokens": 3, "num_return_sequences": 1}
    assert fields == {"prompt": "a", "boxes": True}


def test_info_endpoints(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    ids = ["fixture", *(f"fixture:{e}" for e in FIELDS)]  # OpenAI's list beside it (test_openai)
    assert [m.pop("id") for m in models.pop("data")] == ids and models.pop("object") == "list"
    assert models == {
        "default": "fixture",
        "models": [{"name": "fixture", "default": True, "endpoints": list(FIELDS),
                    "image_size": dict.fromkeys(FIELDS, 64)}],
    }  # fmt: skip
    assert client.get("/healthz").json() == {"status": "ok", "queued": 0, "running": 0}
    post(client, "caption")
    metrics = client.get("/metrics").json()
    assert metrics["requests"]["/v1/caption"]["200"] >= 1
    assert set(metrics["latency_ms"]["/v1/caption"]) == {"count", "p50", "p90", "p99"}
    assert sum(metrics["batch_sizes"].values()) >= 1
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/static/app.js").status_code == 200


# --------------------------------------------------------------------------- errors
def _multipart(data: bytes, **fields: Any) -> dict[str, Any]:
    return {"files": {"image": ("x.png", data, "image/png")}, "data": fields}


ERROR_CASES: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "pixel bomb": ("caption", _multipart(png_header(50_000, 50_000)), 413, "image_too_large"),
    "malformed JSON": (
        "caption", {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
        400, "invalid_json",
    ),
    "JSON not an object": ("caption", {"json": [B64]}, 422, "invalid_request"),
    "bad base64": ("caption", {"json": {"image": "not base64!"}}, 400, "invalid_base64"),
    "non-image upload": ("caption", _multipart(b"hello, world"), 400, "invalid_image"),
    "non-image base64": ("caption", {"json": {"image": "aGVsbG8="}}, 400, "invalid_image"),
    "truncated image": ("caption", _multipart(PNG[: len(PNG) // 2]), 400, "invalid_image"),
    "empty question": ("vqa", _multipart(PNG, question="   "), 422, "invalid_request"),
    "missing question": ("vqa", {"json": {"image": B64}}, 422, "invalid_request"),
    "empty text": ("grounding", {"json": {"image": B64, "text": ""}}, 422, "invalid_request"),
    "empty prompt": ("generate", _multipart(PNG, prompt=""), 422, "invalid_request"),
    "bad option": ("generate", _multipart(PNG, prompt="hi", num_beams="0"), 422, "invalid_request"),
    "unknown field": ("caption", {"json": {"image": B64, "colour": 1}}, 422, "invalid_request"),
    "missing image": ("caption", {"files": {"x": ("x", b"1")}, "data": {}}, 422, "invalid_request"),
    "image as text field": ("caption", {"data": {"image": B64}, "files": {"x": ("x", b"1")}}, 422,
                            "invalid_request"),
    "unknown model": ("caption", {"json": {"image": B64, "model": "nope"}}, 404, "unknown_model"),
    "unsupported type": ("caption", {"content": b"x", "headers": {"content-type": "text/plain"}},
                         415, "unsupported_media_type"),
    "broken multipart": (
        "caption",
        {"content": b"--b\r\nContent-Disposition: form-data\r\n\r\nx",
         "headers": {"content-type": "multipart/form-data; boundary=b"}},
        400, "invalid_multipart",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error(client: TestClient, case: str) -> None:
    endpoint, request, status, code = ERROR_CASES[case]
    r = client.post(f"/v1/{endpoint}", **request)
    assert r.status_code == status, r.text
    assert error_of(r) == code


def test_a_failing_model_answers_500_with_a_json_error(pipelines: dict[str, OFAPipeline]) -> None:
    class Failing(OFAPipeline):
        def predict_prepared(self, *args: Any, **kwargs: Any) -> list[Any]:
            raise RuntimeError("a bug")

    app = create_app({"fixture": {**pipelines, "caption": Failing(**vars(pipelines["caption"]))}})
    with TestClient(app, raise_server_exceptions=False) as c:
        r = post(c, "caption")
        assert r.status_code == 500 and error_of(r) == "internal_error"
        assert post(c, "vqa", question="still there?").status_code == 200  # the batcher lives on


def test_unknown_paths_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/v1/nothing").status_code == 404
    assert error_of(client.get("/v1/nothing")) == "not_found"
    assert client.get("/v1/caption").status_code == 405
    assert error_of(client.get("/v1/caption")) == "method_not_allowed"


@pytest.mark.parametrize("encoding", ["multipart", "json"])
def test_oversized_upload(pipelines: dict[str, OFAPipeline], encoding: str) -> None:
    big = PNG + bytes(20_000)
    with serving(pipelines, max_upload_mb=0.01) as c:
        if encoding == "json":
            r = c.post("/v1/caption", json={"image": base64.b64encode(big).decode()})
        else:
            r = c.post("/v1/caption", files={"image": ("x.png", big)})
        assert r.status_code == 413 and error_of(r) == "payload_too_large"
        assert post(c, "caption").status_code == 200  # the limit leaves normal uploads alone


def test_oversized_upload_to_a_real_server_is_answered_not_dropped(
    pipelines: dict[str, OFAPipeline],
) -> None:
    app = create_app({"fixture": pipelines}, ServeConfig(max_upload_mb=1))
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/caption", files={"image": ("x.png", os.urandom(8 * 2**20))})
        assert r.status_code == 413 and error_of(r) == "payload_too_large"
        chunks = (bytes(2**20) for _ in range(4))  # no Content-Length: counted while streaming
        r = http.post("/v1/caption", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and error_of(r) == "payload_too_large"
        assert post(http, "caption").status_code == 200


def test_queue_full_answers_503_with_retry_after(gated) -> None:
    pipes, gate = gated
    with serving(pipes, max_queue=1, max_batch=1) as c, ThreadPoolExecutor(2) as pool:
        running_one = pool.submit(post, c, "caption")
        assert gate.entered.wait(10)  # the first request's batch is decoding
        queued_one = pool.submit(post, c, "caption")
        wait_for(lambda: c.get("/healthz").json()["queued"] == 1)
        r = post(c, "caption")
        assert r.status_code == 503 and error_of(r) == "queue_full"
        assert int(r.headers["Retry-After"]) >= 1
        gate.gate.set()
        assert running_one.result().status_code == 200
        assert queued_one.result().status_code == 200
        assert c.get("/metrics").json()["requests"]["/v1/caption"] == {"200": 2, "503": 1}


@pytest.mark.slow
def test_timeout_answers_504_and_the_server_recovers(gated) -> None:
    pipes, gate = gated
    with serving(pipes, timeout_s=1.0) as c:
        r = post(c, "caption")
        assert r.status_code == 504 and error_of(r) == "timeout"
        gate.gate.set()
        assert post(c, "caption").status_code == 200


def test_healthz_answers_during_a_long_batch(gated) -> None:
    pipes, gate = gated
    with serving(pipes) as c, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, c, "caption")
        assert gate.entered.wait(10)
        start = time.perf_counter()
        health = c.get("/healthz")
        assert health.json() == {"status": "ok", "queued": 0, "running": 1}
        assert time.perf_counter() - start < 2 and not slow.done()
        gate.gate.set()
        assert slow.result().status_code == 200


def test_concurrent_requests_are_decoded_in_one_batch(pipelines: dict[str, OFAPipeline]) -> None:
    questions = [f"what is shape number {i}?" for i in range(4)]
    with serving(pipelines, max_batch=4, batch_wait_ms=5000) as c, ThreadPoolExecutor(4) as pool:
        start = time.perf_counter()
        answers = list(pool.map(lambda q: post(c, "vqa", question=q), questions))
        assert time.perf_counter() - start < 5  # sent as soon as 4 were there, not after the wait
        assert [a.json()["question"] for a in answers] == questions  # each got its own result
        assert c.get("/metrics").json()["batch_sizes"] == {"4": 1}


def test_batcher_groups_by_key_and_keeps_order() -> None:
    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(items)
        return [2 * i for i in items]

    async def main() -> list[int]:
        batcher = Batcher(max_batch=3, max_wait_s=0.2, max_queue=5)
        batcher.start()
        jobs = [batcher.submit("a" if i % 2 else "b", double, i) for i in range(5)]
        results = list(await asyncio.gather(*jobs))
        overflow = [batcher.submit("c", double, i) for i in range(6)]
        results += await asyncio.gather(*overflow, return_exceptions=True)
        await batcher.close()
        return results

    *results, refused = asyncio.run(main())
    assert results == [0, 2, 4, 6, 8] * 2 and isinstance(refused, QueueFullError)
    assert calls == [[0, 2, 4], [1, 3], [0, 1, 2], [3, 4]]


# --------------------------------------------------------------------------- OpenAPI
def test_openapi_is_complete(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def resolved(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref", "")
        assert ref.startswith("#/components/schemas/"), schema
        return schemas[ref.rsplit("/", 1)[1]]

    assert spec["paths"].pop("/v1/chat/completions")["post"]  # OpenAI's shapes (test_openai)
    assert set(spec["paths"]) == {f"/v1/{e}" for e in FIELDS} | {
        "/v1/models",
        "/healthz",
        "/metrics",
    }
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert resolved(ok)["properties"], (path, method)
            errors = {int(c): r for c, r in op["responses"].items() if c != "200"}
            if method == "post":
                assert set(errors) == {400, 404, 408, 413, 415, 422, 503, 504}, path
                assert "Retry-After" in errors[503]["headers"]
                body = op["requestBody"]["content"]
                assert set(body) == {"multipart/form-data", "application/json"}
                for media in body.values():
                    assert "image" in media["schema"]["required"], path
            elif path == "/healthz":
                assert set(errors) == {503}
            for response in errors.values():
                error = resolved(response["content"]["application/json"]["schema"])
                assert error == schemas["ErrorResponse"]


# --------------------------------------------------------------------------- CLI
def test_cli_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa_vl.serve
    from ofa_vl.cli import main

    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(ofa_vl.serve, "serve", lambda models, **kw: seen.append((models, kw)))
    assert main(["serve"]) == 0
    assert main(["serve", "--model", "a", "--model", "b", "--max-batch", "2", "--port", "9"]) == 0
    (default, default_kw), (models, kw) = seen
    assert default == [DEFAULT_MODEL] and default_kw["host"] == "127.0.0.1"
    assert default_kw["config"] == ServeConfig()
    assert models == ["a", "b"] and kw["port"] == 9 and kw["config"].max_batch == 2


# --------------------------------------------------------------------------- the web page
@pytest.fixture(scope="module")
def web_url() -> Iterator[str]:
    """A real server with the bundled model (the service's default)."""
    with running(create_app({DEFAULT_MODEL: load_pipelines(DEFAULT_MODEL)})) as url:
        yield url


@pytest.mark.slow
@pytest.mark.browser
def test_web_page(web_url: str, tmp_path: Path) -> None:
    missing = [f"{CHROMIUM} (apt-get install chromium)"] if not CHROMIUM.exists() else []
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("playwright (pip install playwright; never `playwright install`)")
    if missing:  # scripts/setup.sh installs both; never skipped
        pytest.fail("missing " + ", ".join(missing) + ": run scripts/setup.sh")
    (tmp_path / "scene.png").write_bytes(PNG)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS,
            headless=True, viewport={"width": 1100, "height": 800},
        )  # fmt: skip
        page = browser.new_page()
        page.goto(web_url)
        page.wait_for_selector(f"#model option[value='{DEFAULT_MODEL}']", state="attached")
        page.set_input_files("#image-input", str(tmp_path / "scene.png"))
        for task, text in (
            ("caption", ""),
            ("grounding", REFERENT),
            ("vqa", "how many shapes are there?"),
        ):
            page.check(f"input[name=task][value={task}]")
            if text:
                page.fill("#text-input", text)
            page.click("#run")
            result = page.wait_for_selector(f".result[data-task={task}] .result-text:not(:empty)")
            assert result is not None and result.inner_text().strip()
        texts = {
            t: page.inner_text(f".result[data-task={t}] .result-text") for t in ("caption", "vqa")
        }
        assert re.search(r"circle|square|triangle", texts["caption"]), texts  # the model sees
        assert re.search(r"\d", texts["vqa"]), texts
        card = page.locator(".result[data-task=grounding]")
        x1, y1, x2, y2 = map(int, re.findall(r"\d+", card.locator(".result-text").inner_text()))
        img, box = card.locator("img").bounding_box(), card.locator(".box").bounding_box()
        assert img and box and box["width"] > 0 and box["height"] > 0
        scale = img["width"] / 128  # the box follows the displayed size of the 128-pixel image
        drawn = (box["x"] - img["x"], box["y"] - img["y"], box["width"], box["height"])
        want = (min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1))
        assert drawn == pytest.approx([v * scale for v in want], abs=1.5 * scale)
        shown = [x1, y1, x2, y2]  # the box the page prints lands on the scene's object
        assert box_iou([shown], [list(_OBJECT.box)]) >= 0.5, shown
        # a second image, dropped on the drop zone, joins the history
        drop = page.evaluate_handle(
            """async (b64) => {
                const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
                const data = new DataTransfer();
                data.items.add(new File([blob], "second.png", { type: "image/png" }));
                return data;
            }""",
            base64.b64encode(scene_png(seed=1, size=96)).decode(),
        )
        page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
        page.check("input[name=task][value=vqa]")
        page.fill("#text-input", "how many shapes are there?")
        page.click("#run")
        page.wait_for_function("document.querySelectorAll('.result').length === 4")
        assert page.inner_text("#status") == ""
        page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
        browser.close()


# --------------------------------------------------------------------------- results = the pipeline's
def _off_diagonal_scene() -> tuple[bytes, list[Any]]:
    """A 128-pixel scene (PNG) whose objects are told apart by colour and shape, none of them near
    the diagonal: swapping x and y moves every box off its object (IoU < 0.5)."""
    for seed in range(100):
        scene = generate_scene(random.Random(seed), 128)
        names = {(o.colour, o.shape) for o in scene.objects}
        swapped = [[o.box[1], o.box[0], o.box[3], o.box[2]] for o in scene.objects]
        far = box_iou(swapped, [list(o.box) for o in scene.objects]) < 0.5
        if len(scene.objects) >= 2 and len(names) == len(scene.objects) and bool(far.all()):
            buf = io.BytesIO()
            render_scene(scene).save(buf, "PNG")
            return buf.getvalue(), list(scene.objects)
    raise AssertionError("no off-diagonal scene in 100 seeds")


SERVED_AS = {  # the response fields (the API's documented schema) <- the pipeline's result keys
    "caption": [("caption", "pred_caption")],
    "grounding": [("text", "text"), ("boxes", "pred_bboxes")],
    "vqa": [("question", "question"), ("answer", "pred_answer")],
    "generate": [("prompt", "prompt"), ("text", "text"), ("boxes", "pred_bboxes"),
                 ("labels", "pred_labels")],
}  # fmt: skip


@pytest.fixture(scope="module")
def bundled() -> dict[str, OFAPipeline]:
    """The bundled model behind every endpoint, with its own task defaults (the service's default)."""
    return load_pipelines(DEFAULT_MODEL)


@pytest.mark.slow
def test_every_endpoint_answers_what_the_pipeline_answers(bundled: dict[str, OFAPipeline]) -> None:
    """Same image, same fields: the service's result is the pipeline's, key for key; the boxes
    land on the objects the scene was drawn with."""
    png, objects = _off_diagonal_scene()
    image = Image.open(io.BytesIO(png))
    texts = [f"the {o.colour} {o.shape}" for o in objects]
    requests: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("caption", {}, {}),
        *[("grounding", {"text": t}, {"text": t}) for t in texts],
        ("vqa", {"question": "how many shapes are there?"}, {"question": "how many shapes are there?"}),
        ("generate", {"prompt": f'which region does the text " {texts[0]} " describe?',
                      "boxes": True, "num_beams": 2, "max_new_tokens": 6},
         {"prompt": f'which region does the text " {texts[0]} " describe?', "boxes": True,
          "num_beams": 2, "max_new_tokens": 6}),
    ]  # fmt: skip
    grounded: list[list[float]] = []
    with TestClient(create_app({DEFAULT_MODEL: bundled})) as c:
        for endpoint, form, call in requests:
            r = c.post(f"/v1/{endpoint}", json={"image": base64.b64encode(png).decode(), **form})
            assert r.status_code == 200, r.text
            served = {k: v for k, v in r.json().items() if k not in ("model", "width", "height")}
            result = bundled[endpoint](image, **call)
            (typed,) = bundled[endpoint].run([image], **call)
            assert served.pop("score") == pytest.approx(typed.score), endpoint
            assert served.pop("confidence") == pytest.approx(typed.confidence), endpoint
            assert served.pop("n_best") is None, endpoint
            assert served == {new: result.get(old) for new, old in SERVED_AS[endpoint]}, endpoint
            if endpoint == "grounding":
                grounded.append(served["boxes"][0])
    assert (box_iou(grounded, [list(o.box) for o in objects]) >= 0.5).all(), (grounded, objects)
