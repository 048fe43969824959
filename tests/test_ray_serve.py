"""Ray Serve (``ofa serve --engine ray``) on a local Ray cluster: 2 CPU replicas answer 40
concurrent requests as the single-process server does, and a replica killed mid-load is replaced
with only its requests in flight failing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from test_serve import scene_png

from ofa_vl.serve import ServeConfig, create_app, load_pipelines
from ofa_vl.serve.ray_engine import REPLICA_HEADER, application
from ofa_vl.zoo import DEFAULT_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]
CLIENTS = 8  # requests in flight at once: at most this many can be on a killed replica
IMAGES = [scene_png(seed) for seed in range(40)]
CONFIG = ServeConfig(max_batch=4)


def answer(reply: httpx.Response) -> tuple[str, float]:
    body = reply.json()
    return body["caption"], round(body["score"], 4)


@pytest.fixture(scope="module")
def expected() -> list[tuple[str, float]]:
    """The single-process server's answers."""
    with TestClient(create_app({DEFAULT_MODEL: load_pipelines(DEFAULT_MODEL)}, CONFIG)) as c:
        return [answer(c.post("/v1/caption", files={"image": ("x.png", png)})) for png in IMAGES]


@pytest.fixture(scope="module")
def ray_url() -> Iterator[str]:
    import ray
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application([DEFAULT_MODEL], CONFIG, replicas=2), name="ofa", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def send(url: str, pngs: list[bytes], during: Any = None) -> list[httpx.Response | None]:
    """Every image to /v1/caption, ``CLIENTS`` at a time; ``during(i)`` after answer i."""

    def one(i: int) -> httpx.Response | None:
        try:
            r = httpx.post(f"{url}/v1/caption", files={"image": ("x.png", pngs[i])}, timeout=120)
        except httpx.HTTPError:
            return None
        if during is not None:
            during(i)
        return r

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(len(pngs))))


def running_replicas() -> int:
    from ray import serve

    status = serve.status().applications["ofa"].deployments["ofa"]
    return status.replica_states.get("RUNNING", 0)


def test_two_replicas_answer_like_one_process(ray_url: str, expected: list[Any]) -> None:
    replies = send(ray_url, IMAGES)
    assert all(r is not None and r.status_code == 200 for r in replies)  # none lost
    assert [answer(r) for r in replies if r is not None] == expected
    assert len({r.headers[REPLICA_HEADER] for r in replies if r is not None}) == 2


def test_a_killed_replica_is_replaced_and_only_its_requests_fail(
    ray_url: str, expected: list[Any]
) -> None:
    import ray

    victim = httpx.post(f"{ray_url}/v1/caption", files={"image": ("x.png", IMAGES[0])})
    replica = victim.headers[REPLICA_HEADER]
    killed: list[str] = []

    def kill(i: int) -> None:
        if i == 4 and not killed:
            killed.append(replica)
            ray.kill(ray.get_actor(f"SERVE_REPLICA::ofa#ofa#{replica}", namespace="serve"))

    replies = send(ray_url, IMAGES, during=kill)
    assert killed
    ok = [i for i, r in enumerate(replies) if r is not None and r.status_code == 200]
    failed = [r for r in replies if r is None or r.status_code != 200]
    assert len(ok) + len(failed) == len(IMAGES) and len(failed) <= CLIENTS, failed
    assert all(r is None or r.status_code >= 500 for r in failed)
    assert [answer(replies[i]) for i in ok] == [expected[i] for i in ok]  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while running_replicas() < 2:
        assert time.monotonic() < deadline, "the killed replica was not replaced"
        time.sleep(0.5)
    after = send(ray_url, IMAGES[:8])
    assert all(r is not None and r.status_code == 200 for r in after)
    assert replica not in {r.headers[REPLICA_HEADER] for r in after if r is not None}
