"""Every channel a bundle can store is served end to end over the one live index, and the
service answers exactly what ``embrecall evaluate --bundle`` measures."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from embrecall import train
from embrecall.evaluation import build_queries
from embrecall.models.channel import UserQuery
from embrecall.pipeline import build_channel, evaluate, read_split
from embrecall.serve.app import create_app
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServingVersion
from tests.conftest import tiny_config

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STORED = ["popular", "itemcf", "item2vec", "ease"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("served"),
                      "channels.serve={two_tower: 0.4, itemcf: 0.2, item2vec: 0.2, ease: 0.1, popular: 0.1}",
                      "channels.item2vec.min_count=1", "channels.item2vec.epochs=3")
    return cfg, train(cfg, show_progress=False).bundle


def _milvus(backend: str, tmp_path) -> str | None:
    if backend == "faiss":
        return None
    pytest.importorskip("milvus_lite", reason="the Milvus backend tests need pip install 'embrecall[milvus]'")
    tmp_path.mkdir()
    return str(tmp_path / "items.db")


@pytest.mark.parametrize("name", STORED)
def test_each_stored_channel_is_served_with_filters_and_live_changes(served, name):
    cfg, path = served
    with TestClient(create_app(path, admin_token=TOKEN)) as client:
        version = client.app.state.service.current
        assert set(version.channels) == {"two_tower", *STORED}
        user = str(version.bundle.users.index[0])
        seen = version.history(user)
        items = version.bundle.items
        wanted = items["category"].value_counts().index[:2].tolist()
        body = client.post("/v1/recall", json={"user_id": user, "k": 10, "quotas": {name: 1},
                                               "filters": {"category": wanted}}).json()
        ids = [i["item_id"] for i in body["items"]]
        assert len(ids) == 10 and not set(ids) & set(seen)
        assert all(items.at[i, "category"] in wanted for i in ids)
        own = [i["item_id"] for i in body["items"] if i["channel"] == name]
        ranked = version.bundle.channels[name].recommend([UserQuery(user, seen)], 10_000, [set(seen)])[0].item_ids
        assert own and own == [i for i in ranked if items.at[i, "category"] in wanted][:len(own)]
        assert name in body["timings_ms"]
        # An item deleted from the live index leaves this channel's answers at once.
        assert client.delete(f"/v1/items/{own[0]}", headers=AUTH).status_code == 200
        body = client.post("/v1/recall", json={"user_id": user, "k": 10, "quotas": {name: 1},
                                               "filters": {"category": wanted}}).json()
        assert own[0] not in [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_the_http_answer_is_the_list_evaluate_bundle_measures(served, backend, tmp_path):
    cfg, path = served
    data, split = read_split(cfg, show_progress=False)
    queries, exclude = build_queries(split.train_full, split.test)
    rows = random.Random(0).sample(range(len(queries)), 200)
    version = ServingVersion(path, VectorCache(size=0), milvus_uri=_milvus(backend, tmp_path / "eval"))
    evaluated = build_channel("served", cfg, data, split, bundle=version, show_progress=False).recommend(
        [queries[r] for r in rows], 100, [exclude[r] for r in rows])
    with TestClient(create_app(path, milvus_uri=_milvus(backend, tmp_path / "serve"))) as client:
        for r, expected in zip(rows, evaluated):
            q = queries[r]
            context = {k: (v.item() if hasattr(v, "item") else v) for k, v in q.context.items()}
            body = client.post("/v1/recall", json={"user_id": q.user_id, "k": 100, "context": context}).json()
            assert [i["item_id"] for i in body["items"]] == expected.item_ids, q.user_id
            assert [i["channel"] for i in body["items"]] == expected.channels


def test_evaluate_bundle_reports_each_served_channel_and_their_merge(served):
    cfg, path = served
    metrics = evaluate(cfg, bundle=path, show_progress=False)
    assert set(metrics) == {"two_tower", *STORED, "served"}
    assert all(0 <= m["HR@10"] <= m["HR@100"] <= 1 for m in metrics.values())


def test_the_service_imports_no_training_code():
    code = ("import sys, embrecall.serve.app; "
            "print([m for m in ('torch', 'gensim', 'embrecall.training', 'embrecall.pipeline') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_config_names_exactly_the_channels_a_bundle_can_serve():
    from embrecall.config import SERVED_CHANNELS
    from embrecall.models.stored import STORED as LOADERS
    assert set(SERVED_CHANNELS) == {"two_tower", *LOADERS}
