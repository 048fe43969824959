"""The OpenAI-compatible routes, driven by the official ``openai`` client against a loopback server:
each answer equals the pipeline's; errors come in OpenAI's shape; Prometheus' exposition format."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from test_serve import PNG, REFERENT

from ofa_vl.api import OFAPipeline
from ofa_vl.serve import ServeConfig, create_app, load_pipelines, running
from ofa_vl.zoo import DEFAULT_MODEL

URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
IMAGE = Image.open(io.BytesIO(PNG))


@pytest.fixture(scope="module")
def tiny() -> dict[str, OFAPipeline]:
    return load_pipelines(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def server(tiny: dict[str, OFAPipeline]) -> Iterator[str]:
    with running(create_app({DEFAULT_MODEL: tiny}, ServeConfig(max_upload_mb=1))) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, model: str, text: str, url: str = URL, **kw: Any) -> Any:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": parts}], **kw
    )


def test_models_are_listed_in_openai_shape(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    tasks = ["caption", "grounding", "ocr", "vqa", "generate"]
    assert ids == [DEFAULT_MODEL, *(f"{DEFAULT_MODEL}:{t}" for t in tasks)]


def test_caption_n_best_and_logprobs_equal_the_pipeline(
    client: openai.OpenAI, tiny: dict[str, OFAPipeline]
) -> None:
    r = ask(client, f"{DEFAULT_MODEL}:caption", "", n=3, logprobs=True)
    (want,) = tiny["caption"].run([IMAGE], num_return_sequences=3, output_scores=True)
    assert [c.message.content for c in r.choices] == [alt.caption for alt in want.n_best]
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c, alt in zip(r.choices, want.n_best):
        assert [(t.token, t.logprob) for t in c.logprobs.content] == [
            (t.token, pytest.approx(t.logprob, abs=1e-5)) for t in alt.token_logprobs
        ]
        assert c.finish_reason == "stop"
    completion = sum(len(alt.token_logprobs) for alt in want.n_best)
    assert r.usage.completion_tokens == completion
    assert r.usage.total_tokens == r.usage.prompt_tokens + completion > completion
    assert r.object == "chat.completion" and r.model == f"{DEFAULT_MODEL}:caption"


def test_grounding_boxes_in_text_and_field(
    client: openai.OpenAI, tiny: dict[str, OFAPipeline]
) -> None:
    r = ask(client, DEFAULT_MODEL, REFERENT, extra_body={"task": "grounding"})
    (want,) = tiny["grounding"].run([IMAGE], text=REFERENT)
    (message,) = [c.message for c in r.choices]
    assert want.boxes and message.boxes == want.boxes  # the structured field (an extra)
    assert message.content == "[" + ", ".join(f"{v:.1f}" for v in want.boxes[0]) + "]"
    assert r.choices[0].logprobs is None  # not asked for


def test_vqa_and_the_free_instruction(client: openai.OpenAI, tiny: dict[str, OFAPipeline]) -> None:
    question = "how many shapes are there?"
    r = ask(client, f"{DEFAULT_MODEL}:vqa", question)
    assert r.choices[0].message.content == tiny["vqa"](IMAGE, question=question)["pred_answer"]
    prompt = " what does the image describe?"
    r = ask(client, DEFAULT_MODEL, prompt, max_tokens=4)
    want = tiny["generate"](IMAGE, prompt=prompt, max_new_tokens=4)["text"]
    assert r.choices[0].message.content == want


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        ({"model": "nope"}, 404, "unknown_model"),
        ({"model": f"{DEFAULT_MODEL}:dance"}, 404, "unknown_model"),
        ({"url": "https://example.com/x.png"}, 400, "url_images_refused"),
        ({"url": "data:image/png;base64,bm90IGFuIGltYWdl"}, 400, "invalid_image"),
        ({"url": "data:image/png;base64," + "A" * 2**21}, 413, "payload_too_large"),
        ({"n": 9}, 422, "invalid_request"),  # more than the beams
        ({"stream": True}, 422, "invalid_request"),
        ({"extra_body": {"colour": 1}}, 422, "invalid_request"),
    ],
)
def test_bad_input_answers_the_openai_error_shape(
    client: openai.OpenAI, request_: dict[str, Any], status: int, code: str
) -> None:
    kw = dict(request_)
    model, url = kw.pop("model", f"{DEFAULT_MODEL}:caption"), kw.pop("url", URL)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, model, "", url, **kw)
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == code and body["message"]
    want_type = "server_error" if status >= 500 else "invalid_request_error"
    assert body["type"] == want_type


def test_one_user_message_with_one_image(server: str) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "no image"}]
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": DEFAULT_MODEL, "messages": msgs})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_metrics_exposition_and_json(server: str, client: openai.OpenAI) -> None:
    ask(client, f"{DEFAULT_MODEL}:caption", "")
    text = httpx.get(f"{server}/metrics", headers={"accept": "text/plain"}).text
    assert (
        'ofa_serve_request_seconds_count{path="/v1/chat/completions",replica="0",status="200"}'
        in text
    )
    assert (
        "# TYPE ofa_serve_batch_size histogram" in text
        and 'ofa_serve_queue_depth{replica="0"} 0.0' in text
    )
    report = httpx.get(f"{server}/metrics").json()  # no Accept: the JSON report, as before
    assert report["requests"]["/v1/chat/completions"]["200"] >= 1


def test_http_image_urls_with_allow_url_images(
    tiny: dict[str, OFAPipeline], tmp_path: Path, client: openai.OpenAI
) -> None:
    """Refused by default (the parametrized case above); fetched with ``allow_url_images``."""
    (tmp_path / "scene.png").write_bytes(PNG)
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    image_url = f"http://127.0.0.1:{files.server_address[1]}/scene.png"
    try:
        app = create_app({DEFAULT_MODEL: tiny}, ServeConfig(allow_url_images=True))
        with running(app) as url:
            allowed = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            fetched = ask(allowed, f"{DEFAULT_MODEL}:caption", "", image_url)
            with pytest.raises(openai.APIStatusError) as missing:
                ask(allowed, f"{DEFAULT_MODEL}:caption", "", image_url + ".gone")
    finally:
        files.shutdown()
    inline = ask(client, f"{DEFAULT_MODEL}:caption", "")
    assert fetched.choices[0].message.content == inline.choices[0].message.content
    assert missing.value.status_code == 400
    assert (
        isinstance(missing.value.body, dict)
        and missing.value.body["code"] == "image_url_unreachable"
    )
