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

import httpx
import pytest
import redis

from embrecall import Bundle, train
from embrecall.export.registry import Registry
from embrecall.serve.feed import send_item_change
from tests.conftest import REDIS_URL as URL, requires_redis, tiny_config

pytestmark = requires_redis


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    return [train(tiny_config(root, f"train.seed={s}"), show_progress=False).bundle for s in (0, 1)]


def _serve(registry, port: int, stream: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "embrecall.cli", "serve", "--registry", str(registry),
                             "--port", str(port), "--feed", URL, "--feed-stream", stream, "--feed-consumer", "crash-1"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"service exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("service not ready after 120 s")


def _found(port: int, user: str) -> set[str]:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/recall", timeout=10,
                   json={"user_id": user, "k": 1000, "filters": {"category": ["crash-cat"]}})
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
