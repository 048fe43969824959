"""Replicas in one process (``ofa serve --replicas/--devices``): a replica per device, requests
spread over them, the answers the single service's, every replica's metrics; the CLI's flags."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from test_serve import scene_png

from ofa_vl.errors import OFAValueError
from ofa_vl.serve import ServeConfig, create_app, load_pipelines, running
from ofa_vl.serve.replicas import Replicated, replica_devices
from ofa_vl.zoo import DEFAULT_MODEL

IMAGES = [scene_png(seed) for seed in range(8)]


def test_replica_devices() -> None:
    assert replica_devices("cuda:0, cuda:1", None) == ["cuda:0", "cuda:1"]
    assert replica_devices("cpu,cpu", 2) == ["cpu", "cpu"]
    assert replica_devices("auto", 2) == ["cpu", "cpu"]  # no GPU here: CPU replicas
    with pytest.raises(OFAValueError, match="one device per replica"):
        replica_devices("cuda:0", 2)


def test_two_replicas_answer_like_one_service_and_report_both() -> None:
    pipes = load_pipelines(DEFAULT_MODEL)  # on CPU every replica's device is the same
    single = create_app({DEFAULT_MODEL: pipes}, ServeConfig(max_batch=1))
    replicated = Replicated([create_app({DEFAULT_MODEL: pipes}, ServeConfig(max_batch=1))
                             for _ in range(2)])  # fmt: skip

    def answers(app: Any) -> list[Any]:
        with running(app) as url, ThreadPoolExecutor(4) as pool:
            post = lambda png: httpx.post(  # noqa: E731
                f"{url}/v1/caption", files={"image": ("x.png", png)}, timeout=60
            ).json()["caption"]
            out = list(pool.map(post, IMAGES))
            return [out, httpx.get(f"{url}/metrics", headers={"accept": "text/plain"}).text]

    (want, _), (got, text) = answers(single), answers(replicated)
    assert got == want
    counts = {r: f'ofa_serve_request_seconds_count{{path="/v1/caption",replica="{r}",status="200"}}'
              for r in "01"}  # fmt: skip
    served = [float(line.split()[-1]) for line in text.splitlines() for c in counts.values()
              if line.startswith(c)]  # fmt: skip
    assert len(served) == 2 and sum(served) == len(IMAGES) and min(served) >= 1, text


def test_cli_replica_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa_vl.serve.ray_engine
    import ofa_vl.serve.replicas
    from ofa_vl.cli import main

    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        ofa_vl.serve.replicas, "replicated_app", lambda m, d, config, **kw: (m, d, config)
    )
    monkeypatch.setattr(
        ofa_vl.serve.replicas, "serve_replicas", lambda app, host, port: seen.append(app)
    )
    monkeypatch.setattr(ofa_vl.serve.ray_engine, "serve_ray", lambda m, **kw: seen.append((m, kw)))
    assert main(["serve", "--replicas", "2", "--allow-url-images"]) == 0
    assert main(["serve", "--devices", "cpu,cpu,cpu"]) == 0
    assert main(["serve", "--engine", "ray", "--replicas", "3", "--port", "9"]) == 0
    (models, devices, config), (_, three, _), (ray_models, ray_kw) = seen
    assert (models, devices, config.allow_url_images) == ([DEFAULT_MODEL], ["cpu", "cpu"], True)
    assert three == ["cpu"] * 3
    assert (ray_models, ray_kw["replicas"], ray_kw["port"]) == ([DEFAULT_MODEL], 3, 9)
