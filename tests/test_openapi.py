"""The service derived from declarations: each endpoint's OpenAPI request schema is its task's
``Fields`` plus the decoding keys plus ``model``; a decoding bound declared once on
``GenerationConfig`` is enforced alike by the HTTP route and the library; one request's prompt is
tokenized once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import test_serve
from fastapi.testclient import TestClient
from test_serve import B64

from ofa_vl.errors import OFAValueError
from ofa_vl.generation import GenerationConfig
from ofa_vl.serve.service import ENDPOINTS
from ofa_vl.tasks import TASKS
from ofa_vl.tokenizer import OFATokenizer

pipelines, client = test_serve.pipelines, test_serve.client  # its module fixtures, shared
OPTIONS = {f.name: f for f in dataclasses.fields(GenerationConfig)}
SERVED = {
    name: f.metadata["service"].get("alias", name)
    for name, f in OPTIONS.items()
    if "service" in f.metadata
}  # fmt: skip  (option -> its HTTP name)


def request_schema(client: TestClient, endpoint: str) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    body = spec["paths"][f"/v1/{endpoint}"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"].keys() == (
        body["application/json"]["schema"]["properties"].keys()
    )
    return body["application/json"]["schema"]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_request_schema_is_the_tasks_fields_plus_decoding_keys(
    client: TestClient, endpoint: str
) -> None:
    spec = ENDPOINTS[endpoint]
    task = TASKS[spec.task]
    schema = request_schema(client, endpoint)
    decoding = {SERVED[k] for k in spec.decoding}
    assert set(schema["properties"]) == {"image", "model", *task.fields(), *decoding}
    assert set(schema["required"]) == {"image", *task.required_fields()}
    assert "n_best" in decoding and (endpoint != "generate" or "top_k" in decoding)


def test_the_declared_bounds_are_the_schemas(client: TestClient) -> None:
    """Each served option's schema bounds are its field's declared ones, tightened by the caps."""
    props = request_schema(client, "generate")["properties"]
    for name, http in SERVED.items():
        meta, prop = OPTIONS[name].metadata, props[http]["anyOf"][0]
        caps = meta["service"]
        assert prop.get("minimum") == caps.get("ge", meta.get("ge")), name
        assert prop.get("exclusiveMinimum") == meta.get("gt"), name
        highs = [v for v in (meta.get("le"), caps.get("le")) if v is not None]
        assert prop.get("maximum") == (min(highs) if highs else None), name


@pytest.mark.parametrize(
    ("option", "bad", "good", "message"),
    [("num_beams", 0, 1, "num_beams must be at least 1, got 0"),
     ("top_p", 1.5, 1.0, r"top_p must be in \(0, 1\], got 1.5"),
     ("top_k", -1, 0, "top_k must be at least 0, got -1")],
)  # fmt: skip
def test_a_bound_declared_once_is_enforced_alike(
    client: TestClient, option: str, bad: float, good: float, message: str
) -> None:
    with pytest.raises(OFAValueError, match=message):
        GenerationConfig(**{option: bad})
    assert getattr(GenerationConfig(**{option: good}), option) == good
    body = {"image": B64, "prompt": "what is it?", "max_new_tokens": 2}
    refused = client.post("/v1/generate", json={**body, option: bad})
    assert refused.status_code == 422 and option in refused.json()["error"]["message"]
    assert client.post("/v1/generate", json={**body, option: good}).status_code == 200


def test_one_vqa_request_tokenizes_its_prompt_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    encode, call = OFATokenizer.encode, OFATokenizer.__call__

    def counted_encode(self: OFATokenizer, text: str, *args: Any, **kw: Any) -> list[int]:
        texts.append(text)
        return encode(self, text, *args, **kw)

    def counted_call(self: OFATokenizer, batch: Any, *args: Any, **kw: Any) -> dict[str, Any]:
        texts.extend([batch] if isinstance(batch, str) else batch)
        return call(self, batch, *args, **kw)

    monkeypatch.setattr(OFATokenizer, "encode", counted_encode)
    monkeypatch.setattr(OFATokenizer, "__call__", counted_call)
    r = client.post("/v1/vqa", json={"image": B64, "question": "what color is it?"})
    assert r.status_code == 200, r.text
    assert texts == [" what color is it?"]
