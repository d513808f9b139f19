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

from embrecall import Bundle
from embrecall.errors import BundleError, ConfigError, GateBreach
from embrecall.export.gate import parse_gate
from embrecall.export.registry import Registry
from embrecall.serve.app import create_app
from embrecall.serve.settings import ServeConfig

AUTH = {"Authorization": "Bearer t"}


@pytest.fixture(scope="module")
def bundles(tiny_bundles):
    return tiny_bundles


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


@pytest.mark.parametrize("backend", ["milvus-lite", "milvus-server"])
def test_a_milvus_alias_names_the_served_versions_collection_through_swaps_and_rollbacks(
    bundles, tmp_path, request, backend
):
    from embrecall.serve.state import ServiceState

    if backend == "milvus-lite":
        pytest.importorskip("milvus_lite", reason="the Milvus backend tests need pip install 'embrecall[milvus]'")
        uri = str(tmp_path / "milvus.db")
    else:
        uri = request.getfixturevalue("milvus_server")
    alias = f"live_{tmp_path.name.replace('-', '_')}"  # a server is shared by the session's tests
    reg = Registry(tmp_path / "reg")
    a = reg.publish(bundles[0])
    state = ServiceState(reg.root, milvus_uri=uri, alias=alias)
    client = state.current.index.client  # type: ignore[union-attr]

    def named() -> str:
        return client.describe_alias(alias)["collection_name"]

    assert named() == state.current.index.collection  # type: ignore[union-attr]
    first = named()
    b = reg.publish(bundles[1])
    assert state.refresh() and state.current.version == b
    assert named() == state.current.index.collection != first  # type: ignore[union-attr]
    served = Bundle.load(bundles[1])
    found = client.search(alias, [served.item_vectors()[0].tolist()], limit=1, output_fields=["item_id"])
    assert found[0][0]["item_id"] == served.encoders.catalog[0]  # the alias searches the served items
    assert reg.rollback() == a and state.refresh()
    assert named() == first


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
