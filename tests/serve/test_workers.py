"""`embrecall serve --workers 2` (real processes on one port): an item change or a user event sent
to either worker reaches both, through Redis; a version that cannot load stops the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import REDIS_URL, free_port, requires_redis

pytestmark = requires_redis
ADMIN, CLIENT = "admin-token", "client-token"


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles[0]


def _get(url: str, **kw) -> httpx.Response:
    with httpx.Client(timeout=10) as http:  # a new connection each time: the kernel picks the worker
        return http.request(kw.pop("method", "GET"), url, **kw)


def test_two_workers_share_item_changes_and_user_events(bundle):
    port, tag = free_port(), uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "EMBRECALL_ADMIN_TOKEN": ADMIN,
        "EMBRECALL_CLIENT_TOKEN": CLIENT,
        "EMBRECALL_FEED__STREAM": f"test-items-{tag}",
        "EMBRECALL_EVENTS__STREAM": f"test-events-{tag}",
    }
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
            "--workers",
            "2",
            "--feed",
            REDIS_URL,
            "--events",
            REDIS_URL,
            "--replica",
            f"w-{tag}",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        replicas: set[str] = set()
        deadline = time.monotonic() + 180
        while len(replicas) < 2 and time.monotonic() < deadline:
            try:
                replicas.add(_get(f"{base}/healthz").json()["replica"])
            except httpx.HTTPError:
                time.sleep(0.2)
        assert replicas == {f"w-{tag}-0", f"w-{tag}-1"}
        r = _get(
            f"{base}/v1/items/new-{tag}",
            method="PUT",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"attributes": {"category": f"cat-{tag}"}},
        )
        assert r.status_code == 200, r.text
        click = {"events": [{"user_id": f"user-{tag}", "item_id": "i-clicked"}]}
        assert (
            _get(
                f"{base}/v1/events", method="POST", json=click, headers={"Authorization": f"Bearer {CLIENT}"}
            ).status_code
            == 202
        )
        time.sleep(0.5)
        seen = set()
        for _ in range(30):
            found = _get(
                f"{base}/v1/recall",
                method="POST",
                json={"user_id": "u1", "k": 5, "filters": {"category": [f"cat-{tag}"]}},
            ).json()["items"]
            assert [i["item_id"] for i in found] == [f"new-{tag}"]
            history = _get(f"{base}/v1/users/user-{tag}", headers={"Authorization": f"Bearer {ADMIN}"}).json()
            assert history["history"] == ["i-clicked"]
            seen.add(_get(f"{base}/healthz").json()["replica"])
        assert len(seen) == 2  # both workers answered
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_bad_version_stops_every_worker_with_its_message(tmp_path):
    (tmp_path / "ACTIVE").write_text("not json")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "embrecall.cli",
            "serve",
            "--registry",
            str(tmp_path),
            "--port",
            str(free_port()),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = run.stdout + run.stderr
    assert run.returncode == 2 and "ACTIVE is not UTF-8 JSON" in said and "Traceback" not in said
