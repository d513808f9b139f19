"""User events online: a click changes the next recall, in process and through Redis shared by
replicas; Redis down refuses events and keeps recall answering; kill -9 loses no accepted event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from embrecall import Bundle
from embrecall.serve.app import create_app
from embrecall.serve.settings import ServeConfig
from tests.conftest import (
    REDIS_URL,
    free_port,
    needs_redis_server,
    redis_server,
    requires_redis,
    wait_ready,
)

CLIENT, ADMIN = "client-token", "admin-token"
AS_CLIENT = {"Authorization": f"Bearer {CLIENT}"}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles[0]


def _items(client: TestClient, user: str, k: int = 20) -> list[str]:
    r = client.post("/v1/recall", json={"user_id": user, "k": k})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def _history(client: TestClient, user: str) -> list[str]:
    return client.get(f"/v1/users/{user}", headers=AS_ADMIN).json()["history"]


def test_a_click_changes_the_next_recall_and_needs_the_client_token(bundle):
    b = Bundle.load(bundle)
    user = str(b.users.index[0])
    with TestClient(create_app(ServeConfig(source=bundle, admin_token=ADMIN, client_token=CLIENT))) as client:
        before = _items(client, user)
        click = {"events": [{"user_id": user, "item_id": before[0]}]}
        assert client.post("/v1/events", json=click).status_code == 401
        assert client.post("/v1/events", json=click, headers=AS_ADMIN).status_code == 401
        r = client.post("/v1/events", json=click, headers=AS_CLIENT)
        assert r.status_code == 202 and r.json() == {"accepted": 1}
        assert _history(client, user)[-1] == before[0]
        after = _items(client, user)
        assert before[0] not in after and after != before[1:]  # the clicked item is seen; the tower saw it too
    with TestClient(create_app(ServeConfig(source=bundle, client_token=""))) as client:
        assert client.post("/v1/events", json=click, headers=AS_CLIENT).status_code == 403


def test_a_user_never_seen_in_training_is_served_from_their_events(bundle):
    b = Bundle.load(bundle)
    clicked = list(b.users.at[b.users.index[0], "items"][-5:])
    with TestClient(create_app(ServeConfig(source=bundle, client_token=CLIENT))) as client:
        cold = client.post("/v1/recall", json={"user_id": "new-user", "k": 20}).json()
        assert cold["cold_start"] is True
        events = [{"user_id": "new-user", "item_id": i} for i in clicked]
        assert client.post("/v1/events", json={"events": events}, headers=AS_CLIENT).status_code == 202
        warm = client.post("/v1/recall", json={"user_id": "new-user", "k": 20}).json()
        assert warm["cold_start"] is False and not set(clicked) & {i["item_id"] for i in warm["items"]}
        assert [i["item_id"] for i in warm["items"]] != [i["item_id"] for i in cold["items"]]


def test_events_before_the_bundle_was_trained_are_in_its_profile_already(bundle):
    b = Bundle.load(bundle)
    user = str(b.users.index[0])
    with TestClient(create_app(ServeConfig(source=bundle, admin_token=ADMIN, client_token=CLIENT))) as client:
        stored = _history(client, user)
        old = {"user_id": user, "item_id": "old-item", "timestamp": int(b.manifest["data"]["until"])}
        assert client.post("/v1/events", json={"events": [old]}, headers=AS_CLIENT).status_code == 202
        assert _history(client, user) == stored
        bad = {"events": [{"user_id": user, "item_id": "x", "timestamp": 10**13}]}
        r = client.post("/v1/events", json=bad, headers=AS_CLIENT)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "events", 0]


@requires_redis
def test_an_event_sent_to_one_replica_reaches_the_other(bundle):
    stream = f"embrecall:test-events:{uuid.uuid4().hex[:8]}"
    user = str(Bundle.load(bundle).users.index[1])
    a = create_app(
        ServeConfig(
            source=bundle,
            admin_token=ADMIN,
            client_token=CLIENT,
            replica="replica-a",
            events={"url": REDIS_URL, "stream": stream},
        )
    )
    b = create_app(
        ServeConfig(
            source=bundle,
            admin_token=ADMIN,
            client_token=CLIENT,
            replica="replica-b",
            events={"url": REDIS_URL, "stream": stream},
        )
    )
    with TestClient(a) as ca, TestClient(b) as cb:
        shown = _items(cb, user)  # replica b now holds a local copy of the user's history
        assert (
            ca.post(
                "/v1/events", json={"events": [{"user_id": user, "item_id": shown[0]}]}, headers=AS_CLIENT
            ).status_code
            == 202
        )
        deadline = time.monotonic() + 5
        while shown[0] in _items(cb, user) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _history(cb, user)[-1] == shown[0] and shown[0] not in _items(cb, user)
        assert cb.app.state.service.histories.applied >= 1  # through b's own consumer group


@needs_redis_server
def test_redis_down_refuses_events_and_recall_still_answers(bundle):
    port = free_port()
    server = redis_server(port)
    user = str(Bundle.load(bundle).users.index[2])
    try:
        app = create_app(ServeConfig(source=bundle, client_token=CLIENT, events={"url": f"redis://127.0.0.1:{port}/0"}))
        with TestClient(app) as client:
            click = {"events": [{"user_id": user, "item_id": "i1"}]}
            assert client.post("/v1/events", json=click, headers=AS_CLIENT).status_code == 202
            server.kill()
            server.wait()
            r = client.post("/v1/events", json=click, headers=AS_CLIENT)
            assert r.status_code == 503 and "send them again" in r.json()["detail"]
            for u in [user, "someone-new"]:
                assert client.post("/v1/recall", json={"user_id": u, "k": 10}).status_code == 200
            failures = [
                line
                for line in client.get("/metrics").text.splitlines()
                if line.startswith("embrecall_user_events_backend_failures")
            ]
            assert float(failures[0].split()[-1]) >= 1
    finally:
        server.kill()


def _serve(bundle, port: int, stream: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "EMBRECALL_CLIENT_TOKEN": CLIENT,
        "EMBRECALL_ADMIN_TOKEN": ADMIN,
        "EMBRECALL_EVENTS__STREAM": stream,
    }  # a nested setting from the environment
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embrecall.cli",
            "serve",
            "--bundle",
            str(bundle),
            "--port",
            str(port),
            "--events",
            REDIS_URL,
            "--replica",
            "kill-1",
        ],
        env=env,
    )
    return wait_ready(proc, port)


@requires_redis
def test_kill_9_while_taking_events_loses_none_it_accepted(bundle):
    stream = f"embrecall:test-events-kill:{uuid.uuid4().hex[:8]}"
    port = free_port()
    proc = _serve(bundle, port, stream)
    accepted: dict[str, list[str]] = {}
    stop = threading.Event()

    def send() -> None:
        n = 0
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                user, item = f"u{n % 7}", f"item-{n}"
                try:
                    r = http.post(
                        f"http://127.0.0.1:{port}/v1/events",
                        headers=AS_CLIENT,
                        json={"events": [{"user_id": user, "item_id": item}]},
                    )
                except httpx.HTTPError:
                    return  # the service is gone
                if r.status_code == 202:
                    accepted.setdefault(user, []).append(item)
                n += 1

    sender = threading.Thread(target=send)
    try:
        sender.start()
        time.sleep(2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        sender.join()
        assert sum(map(len, accepted.values())) > 20
        proc = _serve(bundle, port, stream)
        with httpx.Client(timeout=5, headers=AS_ADMIN) as http:
            for user, items in accepted.items():
                history = http.get(f"http://127.0.0.1:{port}/v1/users/{user}").json()["history"]
                kept = iter(history)  # the last 200 events are kept; one whose reply the kill cut off may be there too
                assert all(item in kept for item in items[-200:]), user
    finally:
        stop.set()
        proc.kill()


def test_the_in_process_store_is_bounded_by_bytes_and_drops_the_least_recent_users():
    """The outside test's 60 posts of 1,000 events with unique 256-character ids: bounded now."""
    from embrecall.serve.events import MemoryHistories
    from embrecall.serve.schemas import UserEvent

    store = MemoryHistories(keep=200, max_users=1_000_000, max_bytes=2 << 20)
    for post in range(60):
        store.add([UserEvent(user_id=f"{post:03d}-{n:04d}".ljust(256, "u"), item_id="i" * 256) for n in range(1000)])
    assert store.bytes <= 2 << 20 and store.dropped == 60_000 - store.users
    assert store.recent(["059-0999".ljust(256, "u")])[0]  # the latest stay
    assert store.recent(["000-0000".ljust(256, "u")]) == [[]]  # the least recent went first


def test_a_token_above_its_rate_gets_429_with_retry_after_and_the_store_is_in_metrics(bundle):
    config = ServeConfig(source=bundle, admin_token=ADMIN, client_token=CLIENT, limits={"rate_per_s": 0.5, "burst": 3})
    with TestClient(create_app(config)) as client:
        click = {"events": [{"user_id": "u-new", "item_id": "i1"}]}
        codes = [client.post("/v1/events", json=click, headers=AS_CLIENT).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        refused = client.post("/v1/events", json=click, headers=AS_CLIENT)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
        assert client.get("/v1/users/u-new", headers=AS_ADMIN).status_code == 200  # the admin token has its own
        metrics = client.get("/metrics").text
        assert "embrecall_user_events_users 1.0" in metrics and "embrecall_user_events_bytes" in metrics
