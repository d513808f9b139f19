"""Every channel a bundle can store is served end to end over the one live index, and the
service answers exactly what ``embrecall evaluate --bundle`` measures."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from embrecall import train
from embrecall.channel_table import STORED
from embrecall.evaluation import build_queries
from embrecall.models.channel import UserQuery
from embrecall.pipeline import build_channel, evaluate, read_split
from embrecall.serve.app import create_app
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServingVersion
from embrecall.serve.settings import ServeConfig
from tests.conftest import tiny_config

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    shares = ", ".join(f"{name}: 0.1" for name in STORED)  # every channel the table says a bundle stores
    cfg = tiny_config(
        tmp_path_factory.mktemp("served"),
        f"channels.serve={{two_tower: 0.4, {shares}}}",
        "channels.item2vec.min_count=1",
        "channels.item2vec.epochs=3",
    )
    return cfg, train(cfg, show_progress=False).bundle


def _milvus(backend: str, tmp_path) -> str | None:
    if backend == "faiss":
        return None
    pytest.importorskip("milvus_lite", reason="the Milvus backend tests need pip install 'embrecall[milvus]'")
    tmp_path.mkdir()
    return str(tmp_path / "items.db")


def _index(backend: str, tmp_path) -> dict:
    uri = _milvus(backend, tmp_path)
    return {"backend": "milvus", "uri": uri} if uri else {}


@pytest.mark.parametrize("name", STORED)
def test_each_stored_channel_is_served_with_filters_and_live_changes(served, name):
    cfg, path = served
    with TestClient(create_app(ServeConfig(source=path, admin_token=TOKEN))) as client:
        version = client.app.state.service.current
        assert set(version.channels) == {"two_tower", *STORED}
        user = str(version.bundle.users.index[0])
        seen = version.history(user)
        items = version.bundle.items
        wanted = items["category"].value_counts().index[:2].tolist()
        body = client.post(
            "/v1/recall", json={"user_id": user, "k": 10, "quotas": {name: 1}, "filters": {"category": wanted}}
        ).json()
        ids = [i["item_id"] for i in body["items"]]
        assert len(ids) == 10 and not set(ids) & set(seen)
        assert all(items.at[i, "category"] in wanted for i in ids)
        own = [i["item_id"] for i in body["items"] if i["channel"] == name]
        ranked = version.bundle.channels[name].recommend([UserQuery(user, seen)], 10_000, [set(seen)])[0].item_ids
        assert own and own == [i for i in ranked if items.at[i, "category"] in wanted][: len(own)]
        assert name in body["timings_ms"]
        # An item deleted from the live index leaves this channel's answers at once.
        assert client.delete(f"/v1/items/{own[0]}", headers=AUTH).status_code == 200
        body = client.post(
            "/v1/recall", json={"user_id": user, "k": 10, "quotas": {name: 1}, "filters": {"category": wanted}}
        ).json()
        assert own[0] not in [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_the_http_answer_is_the_list_evaluate_bundle_measures(served, backend, tmp_path):
    cfg, path = served
    data, split = read_split(cfg, show_progress=False)
    queries, exclude = build_queries(split.train_full, split.test)
    rows = random.Random(0).sample(
        range(len(queries)), 200 if backend == "faiss" else 60
    )  # milvus-lite: ~40 ms a search
    version = ServingVersion(path, VectorCache(size=0), milvus_uri=_milvus(backend, tmp_path / "eval"))
    evaluated = build_channel("served", cfg, data, split, bundle=version, show_progress=False).recommend(
        [queries[r] for r in rows], 100, [exclude[r] for r in rows]
    )
    with TestClient(create_app(ServeConfig(source=path, index=_index(backend, tmp_path / "serve")))) as client:
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


def test_the_service_imports_no_training_code_and_no_log_reader():
    unwanted = (
        "torch",
        "gensim",
        "optuna",
        "matplotlib",
        "embrecall.training",
        "embrecall.pipeline",
        "embrecall.data.movielens",
        "embrecall.data.table",
        "embrecall.data.shards",
        "embrecall.data.synthetic",
    )
    code = f"import sys, embrecall.serve.app; print([m for m in {unwanted!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_channel_name_comes_from_the_channel_table():
    from embrecall.channel_table import CHANNELS

    assert set(CHANNELS) == {"two_tower", *STORED}
    for name in STORED:  # each stored class is the table's, named as the table names it
        assert CHANNELS[name].load_class().name == name


def test_demo_recommend_and_the_service_give_a_user_the_same_list(served, tmp_path):
    from typer.testing import CliRunner

    from embrecall.cli import app
    from embrecall.pipeline import recommend

    cfg, path = served
    version = ServingVersion(path, VectorCache(size=0))
    user = str(version.bundle.users.index[0])
    shown = recommend(version, user, 20)  # what `embrecall demo` prints
    out = CliRunner().invoke(
        app, ["recommend", "--bundle", str(path), "--user", user, "-k", "20", "--json", str(tmp_path / "r.json")]
    )
    assert out.exit_code == 0, out.output
    cli = [row["item_id"] for row in json.loads((tmp_path / "r.json").read_text())]
    with TestClient(create_app(ServeConfig(source=path))) as client:
        body = client.post("/v1/recall", json={"user_id": user, "k": 20}).json()
    assert list(shown["item_id"]) == cli == [i["item_id"] for i in body["items"]]


def test_the_gates_figures_are_what_evaluate_bundle_measures(served):
    cfg, path = served
    manifest = json.loads((path / "manifest.json").read_text())
    measured = evaluate(cfg, ["two_tower", "served"], bundle=path, show_progress=False)
    for name in ("two_tower", "served"):
        for metric in ("HR@10", "NDCG@10", "HR@100", "MRR"):
            assert manifest["metrics"][name][metric] == measured[name][metric], (name, metric)
