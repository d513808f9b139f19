"""Redis: the shared user-vector cache, serving through a Redis outage, and the item change feed."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import redis

from embrecall import Bundle
from embrecall.serve.cache import RedisVectorCache
from embrecall.serve.feed import ChangeFeed, send_item_change
from embrecall.serve.state import ServiceState
from tests.conftest import REDIS_URL as URL
from tests.conftest import (
    free_port,
    needs_redis_server,
    redis_server,
    requires_redis,
)

pytestmark = requires_redis


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles[0]


def test_cache_is_shared_between_replicas():
    key = ("v1", str(uuid.uuid4()))
    a, b = RedisVectorCache(URL), RedisVectorCache(URL)
    a.put(key, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(b.get(key), np.arange(4, dtype=np.float32))
    assert b.hits == 1 and b.failures == 0


@needs_redis_server
def test_requests_are_served_while_redis_goes_down(bundle):
    from fastapi.testclient import TestClient

    from embrecall.serve.app import create_app
    from embrecall.serve.settings import ServeConfig

    port = free_port()
    server = redis_server(port)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        users = Bundle.load(bundle).users.index[:20].tolist()
        with TestClient(create_app(ServeConfig(source=bundle, cache={"redis": url}))) as client:
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
    client.delete(name, f"{name}:dead", f"{name}:snapshot", f"{name}:snapshot:at")


def test_feed_applies_changes_and_sets_bad_entries_aside(bundle, stream):
    state = ServiceState(bundle)
    feed = ChangeFeed(state, URL, stream, consumer="c1")
    feed.catch_up()
    client = redis.Redis.from_url(URL)
    send_item_change(client, stream, "upsert", "fresh", {"category": "c-new", "city": "city1"})
    client.xadd(stream, {"op": "rename", "item_id": "x"})
    client.xadd(stream, {"op": "upsert", "item_id": "inf", "attributes": '{"price": Infinity}'})  # refused by PUT too
    victim = list(Bundle.load(bundle).encoders.catalog_)[0]
    send_item_change(client, stream, "delete", victim)
    assert feed.poll(block_ms=10) == 4
    assert "fresh" in state.current.index and victim not in state.current.index and "inf" not in state.current.index
    assert feed.applied == 4 and feed.dead == 2 and client.xlen(f"{stream}:dead") == 2
    assert client.xpending(stream, "c1")["pending"] == 0  # everything acknowledged


def test_a_malformed_last_change_leaves_the_valid_one_before_it(bundle, stream):
    client = redis.Redis.from_url(URL)
    feed = ChangeFeed(ServiceState(bundle), URL, stream, consumer="c1")
    feed.catch_up()
    send_item_change(client, stream, "upsert", "twice", {"category": "c3"})
    client.xadd(stream, {"op": "upsert", "item_id": "twice", "attributes": "{not json"})
    assert feed.poll(block_ms=10) == 2
    assert _categories(feed.state, ["twice"]) == ["c3"] and feed.dead == 1


def test_after_a_restart_nothing_acknowledged_or_pending_is_lost(bundle, stream):
    client = redis.Redis.from_url(URL)
    first = ChangeFeed(ServiceState(bundle), URL, stream, consumer="c1")
    first.catch_up()
    send_item_change(client, stream, "upsert", "acked", {"category": "c-a"})
    first.poll(block_ms=10)  # applied and acknowledged, then the process "dies"
    send_item_change(client, stream, "upsert", "pending", {"category": "c-b"})
    client.xreadgroup("c1", "c1", {stream: ">"}, count=10)  # delivered to c1, which dies before acknowledging
    restarted = ServiceState(bundle)
    feed = ChangeFeed(restarted, URL, stream, consumer="c1")
    feed.catch_up()
    assert "acked" in restarted.current.index and "pending" in restarted.current.index
    assert client.xpending(stream, "c1")["pending"] == 0
    send_item_change(client, stream, "upsert", "later", {"category": "c-c"})
    assert feed.poll(block_ms=10) == 1 and "later" in restarted.current.index  # the group goes on after the replay


CATEGORIES = [f"c{r}" for r in range(50)]


def _categories(state: ServiceState, items: list[str]) -> list[str | None]:
    """The category the live index holds for each item (None: not in the index)."""
    index = state.current.index
    return [next((c for c in CATEGORIES if index.select([i], {"category": [c]}).size), None) for i in items]


def test_a_snapshot_lets_the_stream_be_trimmed_and_a_restart_replay_only_the_tail(bundle, stream):
    client = redis.Redis.from_url(URL)
    feed = ChangeFeed(ServiceState(bundle), URL, stream, consumer="c1", max_len=10)
    feed.catch_up()
    items = [f"churn-{j}" for j in range(20)]
    for r in range(30):  # 600 changes of 20 items, some deleted on the way
        for j, item in enumerate(items):
            if (r + j) % 7 == 0:
                send_item_change(client, stream, "delete", item)
            else:
                send_item_change(client, stream, "upsert", item, {"category": f"c{r}"})
        feed.poll(block_ms=10, count=1000)
    assert feed.compact() >= 590 and client.xlen(stream) <= 10
    assert client.hlen(f"{stream}:snapshot") == 20
    for item in items[:3]:  # the tail a restart must replay
        send_item_change(client, stream, "upsert", item, {"category": "c40"})
    feed.poll(block_ms=10)
    restarted = ChangeFeed(ServiceState(bundle), URL, stream, consumer="c1")
    assert restarted.catch_up() == 3
    assert _categories(restarted.state, items) == _categories(feed.state, items)
    assert _categories(restarted.state, items[:3]) == ["c40"] * 3 and None in _categories(feed.state, items)


def test_trimming_waits_for_a_replica_that_has_not_read_yet(bundle, stream):
    client = redis.Redis.from_url(URL)
    fast = ChangeFeed(ServiceState(bundle), URL, stream, consumer="fast", max_len=10)
    fast.catch_up()
    slow = ChangeFeed(ServiceState(bundle), URL, stream, consumer="slow")
    slow.catch_up()
    for j in range(50):
        send_item_change(client, stream, "upsert", f"x{j}", {"category": "c1"})
    fast.poll(block_ms=10, count=1000)
    assert fast.compact() == 0 and client.xlen(stream) == 50  # "slow" has read nothing yet
    assert slow.poll(block_ms=10, count=1000) == 50 and all(f"x{j}" in slow.state.current.index for j in range(50))
    assert fast.compact() == 49  # all but the last one delivered (trimming keeps the entry every group stands on)


@needs_redis_server
def test_the_feed_survives_redis_restarting_empty(bundle):
    """Redis restarted without persistence: the stream and group are gone; changes sent afterwards
    are applied, and the reset is counted."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = redis_server(port)
    state = ServiceState(bundle)
    feed = ChangeFeed(state, url, "items", consumer="c1")
    feed.start()
    try:
        send_item_change(redis.Redis.from_url(url), "items", "upsert", "before", {"category": "c1"})
        deadline = time.monotonic() + 10
        while "before" not in state.current.index and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()
        server.wait()
        server = redis_server(port)  # empty
        send_item_change(redis.Redis.from_url(url), "items", "upsert", "after", {"category": "c1"})
        deadline = time.monotonic() + 15
        while "after" not in state.current.index and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "after" in state.current.index and "before" in state.current.index and feed.resets >= 1
    finally:
        feed.stop()
        server.kill()
