"""Versions: gated publish, rollback, a live swap that keeps item changes, and kill -9 safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from embrecall import Bundle, train
from embrecall.errors import BundleError, ConfigError, GateBreach
from embrecall.export.gate import parse_gate
from embrecall.export.registry import Registry
from embrecall.serve.app import create_app
from embrecall.serve.settings import ServeConfig
from tests.conftest import tiny_config

AUTH = {"Authorization": "Bearer t"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    return [train(tiny_config(root, f"train.seed={s}"), show_progress=False).bundle for s in (0, 1)]


def test_gate_refuses_a_version_below_the_bar(bundles, tmp_path):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(GateBreach, match=r"not published: two_tower.HR@10 = 0\.\d+, gate needs >= 2.0"):
        reg.publish(bundles[0], [parse_gate("HR@10>=2.0")])
    assert reg.active() is None
    with pytest.raises(ConfigError, match="is not of the form"):
        parse_gate("HR@10 about 0.2")


def test_publish_and_rollback(bundles, tmp_path):
    reg = Registry(tmp_path / "reg")
    a = reg.publish(bundles[0], [parse_gate("HR@10>=0.01"), parse_gate("popular.HR@10<1")])
    b = reg.publish(bundles[1])
    assert reg.state() == {"active": b, "history": [a]}
    assert Bundle.load(reg.active()).version == b
    assert reg.rollback() == a and reg.active().name == a
    with pytest.raises(BundleError, match="nothing to roll back to"):
        reg.rollback()


def test_service_follows_the_registry_and_keeps_item_changes(bundles, tmp_path):
    reg = Registry(tmp_path / "reg")
    a = reg.publish(bundles[0])
    with TestClient(create_app(ServeConfig(source=reg.root, admin_token="t", watch_interval_s=0.05))) as client:
        assert client.get("/v1/version").json()["version"] == a
        item = {"category": "c-new", "city": "city1", "price": 3.0, "title": "t"}
        assert client.put("/v1/items/fresh", json={"attributes": item}, headers=AUTH).status_code == 200
        b = reg.publish(bundles[1])
        deadline = time.monotonic() + 10
        while client.get("/v1/version").json()["version"] != b and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/v1/version").json()["version"] == b
        user = Bundle.load(bundles[1]).users.index[0]
        found = client.post("/v1/recall", json={"user_id": user, "k": 3, "filters": {"category": ["c-new"]}}).json()
        assert found["version"] == b and [i["item_id"] for i in found["items"]] == ["fresh"]


PUBLISH_LOOP = """
import sys
from embrecall.export.registry import Registry
reg = Registry(sys.argv[1])
print("ready", flush=True)
while True:
    for bundle in sys.argv[2:]:
        reg.publish(bundle)
"""


def test_kill_9_while_publishing_leaves_one_complete_active_version(bundles, tmp_path):
    root = tmp_path / "reg"
    Registry(root).publish(bundles[0])
    for delay in (0.05, 0.2, 0.5, 1.0):
        proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISH_LOOP, str(root), *map(str, bundles)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = json.loads((root / "ACTIVE").read_text())  # always whole JSON: written then renamed
        assert Bundle.load(root / state["active"]).version == state["active"]
