"""``ofa push`` / ``push_to_hub`` against a local stand-in of the hub's HTTP API (issue 27): the
upload goes through ``huggingface_hub`` (create repo, preupload, commit), the stand-in records and
serves the files, and ``get_model("hf-hub:...")`` loads them back with the same outputs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from test_tokenizer import COMMIT, FakeHub, _HubHandler

from ofa_vl.api import get_model
from ofa_vl.cli import main
from ofa_vl.errors import OFAFileNotFoundError, OFAValueError
from ofa_vl.publish import model_card, push_folder
from ofa_vl.shapes.world import Scene, generate_scene, render_scene
from ofa_vl.zoo import DEFAULT_MODEL, PACKAGE_ASSETS

pytestmark = [pytest.mark.slow]
BUNDLED = PACKAGE_ASSETS / DEFAULT_MODEL


class _PushHandler(_HubHandler):
    """The hub's write API as ``huggingface_hub`` 2.x calls it: ``/api/repos/create``,
    ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}`` (every file "regular": no LFS)
    and ``/api/models/{repo}/commit/{rev}`` (NDJSON, base64 contents)."""

    def do_GET(self) -> None:
        """``/api/models/{repo}/revision/{rev}`` and ``/tree/{rev}`` (``snapshot_download``), else
        the files (``resolve``)."""
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] != ["api", "models"]:
            return super().do_GET()
        self.server.requests.append((self.command, self.path))
        files = self.server.repos.get("/".join(parts[2:4]))
        if files is None:
            return self._json(404, {"error": "Repository not found"})
        listing = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                   for n, b in sorted(files.items())]  # fmt: skip
        if parts[4] == "tree":
            return self._json(200, listing)
        siblings = [{"rfilename": f["path"]} for f in listing]
        return self._json(200, {"id": "/".join(parts[2:4]), "sha": COMMIT, "siblings": siblings})

    def do_POST(self) -> None:
        self.server.requests.append((self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "repos", "create"]:
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}"
            exists = repo in self.server.repos
            self.server.repos.setdefault(repo, {})
            return self._json(409 if exists else 200, {"url": f"{self.server.url}/{repo}"})
        if parts[:2] == ["api", "validate-yaml"]:
            return self._json(200, {"errors": [], "warnings": []})
        repo, verb = "/".join(parts[2:4]), parts[4] if len(parts) > 4 else ""
        if parts[:2] != ["api", "models"] or repo not in self.server.repos:
            return self._json(404, {"error": "Repository not found"})
        if verb == "preupload":
            files = json.loads(body)["files"]
            modes = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]
            return self._json(200, {"files": modes})
        if verb == "commit":
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    self.server.repos[repo][value["path"]] = base64.b64decode(value["content"])
            url = f"{self.server.url}/{repo}/commit/{COMMIT}"
            return self._json(200, {"commitUrl": url, "commitOid": COMMIT})
        return self._json(404, {"error": f"no {verb}"})

    def _json(self, status: int, data: dict | list) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class PushHub(FakeHub):
    def __init__(self) -> None:
        super().__init__({})
        self.RequestHandlerClass = _PushHandler


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushHub]:
    server = PushHub()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _scene() -> Scene:
    return generate_scene(np.random.default_rng([27, 5]), 256)


def test_push_then_load_gives_identical_outputs(hub: PushHub, capsys) -> None:
    """``ofa push`` of the bundled model folder, then ``get_model("hf-hub:...")``: the same files
    on the hub, the same captions, boxes and scores."""
    assert main(["push", str(BUNDLED), "user/shapes", "--task", "refcoco"]) == 0
    assert "user/shapes" in capsys.readouterr().out
    files = hub.repos["user/shapes"]
    for name in ("model.safetensors", "tokenizer.json", "ofa_tokenizer.json", "pipeline.json"):
        assert files[name] == (BUNDLED / name).read_bytes(), name
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: ofa-vl\nlicense: apache-2.0")
    assert 'get_model("hf-hub:user/shapes", task="refcoco")' in card and '"image_size": 128' in card
    posts = [p for m, p in hub.requests if m == "POST"]
    assert posts[0] == "/api/repos/create" and posts[-1].startswith(
        "/api/models/user/shapes/commit/"
    )

    scene = _scene()
    image, text = render_scene(scene), f"the {scene.objects[0].colour} {scene.objects[0].shape}"
    local = get_model(DEFAULT_MODEL, task="refcoco")
    remote = get_model("hf-hub:user/shapes", task="refcoco")
    assert remote.task.image_size == 128  # pipeline.json came along
    (a,), (b,) = local.run([image], text=text), remote.run([image], text=text)
    assert a.boxes == b.boxes and a.score == b.score and a.confidence == b.confidence
    caption = [r.caption for r in local.with_task("caption").run([image])]
    assert [r.caption for r in remote.with_task("caption").run([image])] == caption


def test_pipeline_push_to_hub_round_trips(hub: PushHub) -> None:
    """``pipeline.push_to_hub``: weights, tokenizer and the pipeline's preprocessing, saved and
    pushed; loading them back answers the same."""
    pipe = get_model(DEFAULT_MODEL, task="caption")
    url = pipe.push_to_hub("user/pushed")
    assert url.startswith(hub.url) and "README.md" in hub.repos["user/pushed"]
    settings = json.loads(hub.repos["user/pushed"]["pipeline.json"])
    assert settings["image_size"] == 128 and settings["interpolation"] == "bilinear"
    image = render_scene(_scene())
    back = get_model("hf-hub:user/pushed")
    (a,), (b,) = pipe.run([image]), back.run([image])
    assert a.caption == b.caption and a.score == pytest.approx(b.score, abs=1e-5)


def test_adapter_card_and_bad_folders(tmp_path: Path) -> None:
    """A LoRA adapter folder gets a card naming its base and rank; a folder without weights or a
    bad repo id is one clear error before any upload."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter.safetensors").write_bytes(b"")
    (adapter / "adapter.json").write_text(
        json.dumps({"format": "ofa-vl-lora", "options": {"rank": 8}})
    )
    (adapter / "validation.json").write_text(
        json.dumps({"step": 40, "metric": "CIDEr", "value": 1.5})
    )
    (tmp_path / "settings.json").write_text(
        json.dumps({"task": "caption", "init": "ofa-tiny_shapes"})
    )
    card = model_card(adapter, "user/lora")
    assert "base_model: ofa-tiny_shapes" in card and "LoRA adapter (rank 8)" in card
    assert "CIDEr = 1.5 at step 40" in card and "--merge-adapter" in card
    with pytest.raises(OFAFileNotFoundError, match="not a model folder"):
        push_folder(tmp_path, "user/x")
    with pytest.raises(OFAValueError, match="not a hub repository id"):
        push_folder(adapter, "no-slash")


def test_lora_adapter_push_then_load_as_its_card_says(hub: PushHub, tmp_path: Path) -> None:
    """A LoRA adapter folder pushed, then loaded the way its card says (the base, then
    ``load_adapter`` on the downloaded snapshot): the adapted model's scores, not the base's."""
    pytest.importorskip("peft")
    import torch
    from huggingface_hub import snapshot_download

    from ofa_vl.lora import LoraOptions, add_lora, load_adapter, save_adapter

    tuned = get_model(DEFAULT_MODEL, task="caption")
    add_lora(tuned.model, LoraOptions(rank=2, targets=("ffn",)))
    with torch.no_grad():  # a trained adapter's B is not zero: make this one move the outputs
        for name, p in tuned.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    folder = tmp_path / "adapter"
    save_adapter(tuned.model, folder)
    push_folder(folder, "user/lora", task="caption", base_model=DEFAULT_MODEL)
    card = hub.repos["user/lora"]["README.md"].decode()
    assert f"base_model: {DEFAULT_MODEL}" in card and 'snapshot_download("user/lora")' in card

    pipe = get_model(DEFAULT_MODEL, task="caption")  # what the card's code does
    # huggingface_hub read HF_ENDPOINT and HF_HUB_CACHE at import, before this test set them
    where = {"endpoint": hub.url, "cache_dir": os.environ["HF_HUB_CACHE"]}
    load_adapter(pipe.model, Path(snapshot_download("user/lora", **where)))
    image = render_scene(_scene())
    (base,) = get_model(DEFAULT_MODEL, task="caption").run([image])
    (want,), (got,) = tuned.run([image]), pipe.run([image])
    assert got.caption == want.caption and got.score == pytest.approx(want.score, abs=1e-6)
    assert got.score != pytest.approx(base.score, abs=1e-4)
