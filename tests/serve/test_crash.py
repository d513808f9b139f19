"""kill -9 of a running service (a real `embrecall serve` process) while it consumes the change
feed and swaps versions: after a restart it serves the active version, with every change."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from embrecall import Bundle
from embrecall.export.registry import Registry
from embrecall.serve.feed import send_item_change
from tests.conftest import REDIS_URL as URL
from tests.conftest import requires_redis, wait_ready

pytestmark = requires_redis


@pytest.fixture(scope="module")
def bundles(tiny_bundles):
    return tiny_bundles


def _serve(registry, port: int, stream: str, max_len: int = 10_000) -> subprocess.Popen:
    """`embrecall serve` from a serve config file, as a deployment would run it."""
    config = Path(registry).parent / f"serve-{port}.toml"
    config.write_text(
        f'source = "{registry}"\nport = {port}\nreplica = "crash-1"\n\n'
        f'[feed]\nurl = "{URL}"\nstream = "{stream}"\nmax_len = {max_len}\n'
    )
    proc = subprocess.Popen([sys.executable, "-m", "embrecall.cli", "serve", "--config", str(config)])
    return wait_ready(proc, port)


def _found(port: int, user: str, category: str = "crash-cat") -> set[str]:
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/recall",
        timeout=10,
        json={"user_id": user, "k": 1000, "filters": {"category": [category]}},
    )
    assert r.status_code == 200, r.text
    return {i["item_id"] for i in r.json()["items"]}


def test_kill_9_during_feed_consumption_and_a_swap_loses_no_change(bundles, tmp_path):
    client = redis.Redis.from_url(URL)
    stream = f"embrecall:test-crash:{uuid.uuid4().hex[:8]}"
    registry = Registry(tmp_path / "reg")
    registry.publish(bundles[0])
    user = Bundle.load(bundles[0]).users.index[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _serve(registry.root, port, stream)
    sent = []
    try:
        for i in range(30):  # the service consumes while these arrive
            sent.append(f"crash-{i}")
            send_item_change(client, stream, "upsert", sent[-1], {"category": "crash-cat", "city": "city1"})
        registry.publish(bundles[1])  # the service starts swapping (it polls ACTIVE every second)
        deadline = time.monotonic() + 30
        while not _found(port, user) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _found(port, user), "no change applied before the kill"
        for i in range(30, 60):
            sent.append(f"crash-{i}")
            send_item_change(client, stream, "upsert", sent[-1], {"category": "crash-cat", "city": "city1"})
        time.sleep(0.6)  # mid-consumption, mid-swap
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for i in range(60, 80):  # changes sent while the service is down
            sent.append(f"crash-{i}")
            send_item_change(client, stream, "upsert", sent[-1], {"category": "crash-cat", "city": "city1"})
        proc = _serve(registry.root, port, stream)
        deadline = time.monotonic() + 30
        while _found(port, user) != set(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _found(port, user) == set(sent)
        version = httpx.get(f"http://127.0.0.1:{port}/v1/version", timeout=10).json()["version"]
        assert version == registry.active().name == Bundle.load(bundles[1]).version
        assert client.xpending(stream, "crash-1")["pending"] == 0
    finally:
        proc.kill()
        client.delete(stream)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_restart_after_a_long_stream_is_ready_only_when_current(bundles, tmp_path):
    """20,000 changes of 200 items sent while the service is down: ready means every one applied.
    Once it has run, the stream is snapshotted and trimmed, so the next start after a kill -9
    replays only the tail, and is again current the moment it says ready."""
    client = redis.Redis.from_url(URL)
    stream = f"embrecall:test-restart:{uuid.uuid4().hex[:8]}"
    registry = Registry(tmp_path / "reg")
    registry.publish(bundles[0])
    user = Bundle.load(bundles[0]).users.index[0]
    items = [f"long-{j}" for j in range(200)]
    deleted = {i for j, i in enumerate(items) if j % 10 == 5}
    pipe = client.pipeline(transaction=False)
    for r in range(100):
        for item in items:
            last = r == 99
            if last and item in deleted:
                send_item_change(pipe, stream, "delete", item)
            else:
                send_item_change(pipe, stream, "upsert", item, {"category": "final" if last else f"r{r}"})
    pipe.execute()
    port = _port()
    proc = _serve(registry.root, port, stream, max_len=1000)
    try:
        assert _found(port, user, "final") == set(items) - deleted  # right at ready: nothing stale
        assert _found(port, user, "r98") == set()
        deadline = time.monotonic() + 30
        while client.xlen(stream) > 1000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.xlen(stream) <= 1000 and client.hlen(f"{stream}:snapshot") == len(items)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for item in items[:50]:  # the tail, sent while it is down
            send_item_change(client, stream, "upsert", item, {"category": "tail"})
        proc = _serve(registry.root, port, stream, max_len=1000)
        assert _found(port, user, "tail") == set(items[:50])
        assert _found(port, user, "final") == set(items[50:]) - deleted
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        replayed = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("embrecall_change_feed_replayed")
        )
        assert replayed <= 1000 + 50  # the snapshot, then only what came after it
    finally:
        proc.kill()
        client.delete(stream, f"{stream}:snapshot", f"{stream}:snapshot:at", f"{stream}:dead")
