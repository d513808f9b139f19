"""Redis: the shared user-vector cache, serving through a Redis outage, and the item change feed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest
import redis

from embrecall import Bundle, train
from embrecall.serve.cache import RedisVectorCache
from embrecall.serve.feed import ChangeFeed, send_item_change
from embrecall.serve.state import ServiceState
from tests.conftest import REDIS_URL as URL, requires_redis, tiny_config

pytestmark = requires_redis


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return train(tiny_config(tmp_path_factory.mktemp("redis")), show_progress=False).bundle


def test_cache_is_shared_between_replicas():
    key = ("v1", str(uuid.uuid4()))
    a, b = RedisVectorCache(URL), RedisVectorCache(URL)
    a.put(key, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(b.get(key), np.arange(4, dtype=np.float32))
    assert b.hits == 1 and b.failures == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server binary not installed")
def test_requests_are_served_while_redis_goes_down(bundle):
    from fastapi.testclient import TestClient

    from embrecall.serve.app import create_app

    port = _free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        users = Bundle.load(bundle).users.index[:20].tolist()
        with TestClient(create_app(bundle, redis_url=url)) as client:
            for u in users[:10]:
                assert client.post("/v1/recall", json={"user_id": u, "k": 10}).status_code == 200
            server.kill()
            server.wait()
            for u in users:  # cached and uncached users alike
                r = client.post("/v1/recall", json={"user_id": u, "k": 10})
                assert r.status_code == 200 and len(r.json()["items"]) == 10
            metrics = client.get("/metrics").text
            failures = [line for line in metrics.splitlines() if line.startswith("embrecall_cache_backend_failures")]
            assert float(failures[0].split()[-1]) >= 1
    finally:
        server.kill()


@pytest.fixture
def stream():
    name = f"embrecall:test:{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(URL)
    client.delete(name, f"{name}:dead")


def test_feed_applies_changes_and_sets_bad_entries_aside(bundle, stream):
    state = ServiceState(bundle)
    feed = ChangeFeed(state, URL, stream, group="g", consumer="c1")
    feed._ensure_group()
    client = redis.Redis.from_url(URL)
    send_item_change(client, stream, "upsert", "fresh", {"category": "c-new", "city": "city1"})
    client.xadd(stream, {"op": "rename", "item_id": "x"})
    victim = list(Bundle.load(bundle).encoders.catalog_)[0]
    send_item_change(client, stream, "delete", victim)
    assert feed.poll(block_ms=10) == 3
    assert "fresh" in state.current.index and victim not in state.current.index
    assert feed.applied == 2 and feed.dead == 1 and client.xlen(f"{stream}:dead") == 1
    assert client.xpending(stream, "g")["pending"] == 0  # everything acknowledged


def test_after_a_restart_nothing_acknowledged_or_pending_is_lost(bundle, stream):
    client = redis.Redis.from_url(URL)
    first = ChangeFeed(ServiceState(bundle), URL, stream, group="g", consumer="c1")
    first._ensure_group()
    send_item_change(client, stream, "upsert", "acked", {"category": "c-a"})
    first.poll(block_ms=10)  # applied and acknowledged, then the process "dies"
    send_item_change(client, stream, "upsert", "pending", {"category": "c-b"})
    client.xreadgroup("g", "c1", {stream: ">"}, count=10)  # delivered to c1, which dies before acknowledging
    restarted = ServiceState(bundle)
    feed = ChangeFeed(restarted, URL, stream, group="g", consumer="c1")
    feed._ensure_group()
    feed.replay_history()
    feed.poll(block_ms=10)
    assert "acked" in restarted.current.index and "pending" in restarted.current.index
    assert client.xpending(stream, "g")["pending"] == 0
