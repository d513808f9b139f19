"""Entity recall and category-parallel recall through the service, as evaluation measures them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from embrecall import train
from embrecall.models.channel import UserQuery
from embrecall.pipeline import evaluate_entity_recall
from embrecall.serve.app import create_app
from embrecall.serve.service import ServedChannel
from embrecall.serve.settings import ServeConfig
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("entities"))
    return cfg, train(cfg, show_progress=False).bundle


def test_categories_are_recalled_for_a_user_with_the_same_user_vector(served):
    cfg, path = served
    with TestClient(create_app(ServeConfig(source=path))) as client:
        version = client.app.state.service.current
        user = str(version.bundle.users.index[0])
        body = client.post(
            "/v1/recall", json={"user_id": user, "k": 5, "target": "category", "context": {"timestamp": 1_700_000_000}}
        )
        assert body.status_code == 200, body.text
        got = [i["item_id"] for i in body.json()["items"]]
        assert len(got) == 5 and set(got) <= set(version.bundle.items["category"])
        query = UserQuery(user, version.history(user), {"timestamp": 1_700_000_000})
        assert got == version.entity_recall("category").recommend([query], 5)[0].item_ids
        scores = [i["score"] for i in body.json()["items"]]
        assert scores == sorted(scores, reverse=True)
        # a value nobody filters on, and options that only items take, are refused with the reason
        bad = client.post("/v1/recall", json={"user_id": user, "target": "price"})
        assert bad.status_code == 422 and "price" in bad.text
        mixed = client.post("/v1/recall", json={"user_id": user, "target": "category", "filters": {"city": ["x"]}})
        assert mixed.status_code == 422 and "filters" in mixed.text


def test_category_parallel_recall_searches_the_users_top_categories(served):
    cfg, path = served
    with TestClient(create_app(ServeConfig(source=path))) as client:
        version = client.app.state.service.current
        for user in map(str, version.bundle.users.index[:50]):  # one whose top categories each have 4 items left
            top = version.entity_recall("category").recommend([UserQuery(user, version.history(user))], 3)[0].item_ids
            alone = {
                c: [
                    i["item_id"]
                    for i in client.post(
                        "/v1/recall", json={"user_id": user, "k": 12, "filters": {"category": [c]}}
                    ).json()["items"]
                ]
                for c in top
            }
            if all(len(found) >= 4 for found in alone.values()):
                break
        body = client.post(
            "/v1/recall", json={"user_id": user, "k": 12, "parallel": {"attribute": "category", "groups": 3}}
        ).json()
        ids = [i["item_id"] for i in body["items"]]
        cats = [version.bundle.items.at[i, "category"] for i in ids]
        assert len(ids) == 12 and all(cats.count(c) == 4 for c in top)  # equal shares of the top 3
        for c in top:  # each share is that category's own filtered answer, best first
            assert [i for i, cat in zip(ids, cats) if cat == c] == alone[c][:4]
        assert "entities" in body["timings_ms"]
        many = client.post(
            "/v1/recall", json={"user_id": user, "k": 100, "parallel": {"attribute": "category", "groups": 3}}
        ).json()["items"]
        assert len(many) == 100  # more than the three categories hold: the plain list fills the rest
        assert [i["item_id"] for i in many[:12]] == ids
        channel = ServedChannel(version, version.quotas, "parallel", parallel=("category", 3))
        query = UserQuery(user, version.history(user), {})
        assert ids == channel.recommend([query], 12, [set(query.history)])[0].item_ids


def test_entity_recall_is_evaluated_beside_its_baselines(served):
    cfg, path = served
    rows = evaluate_entity_recall(cfg, "category", path, show_progress=False)
    assert list(rows) == ["two_tower", "history", "popular"]
    for m in rows.values():
        assert 0 < m["HR@10"] <= 1 and m["values"] == 20


def test_category_parallel_recall_keeps_the_requests_own_filters(served):
    cfg, path = served
    with TestClient(create_app(ServeConfig(source=path))) as client:
        version = client.app.state.service.current
        items = version.bundle.items
        user = str(version.bundle.users.index[0])
        wanted = items["category"].value_counts().index[-1]  # the smallest category: the groups alone cannot fill k
        body = client.post(
            "/v1/recall",
            json={
                "user_id": user,
                "k": 20,
                "filters": {"category": [wanted]},
                "parallel": {"attribute": "category", "groups": 3},
            },
        )
        assert body.status_code == 200, body.text
        ids = [i["item_id"] for i in body.json()["items"]]
        assert ids and {items.at[i, "category"] for i in ids} == {wanted}
        # a filter no item passes gets no items, not another category's
        city = client.post(
            "/v1/recall",
            json={
                "user_id": user,
                "k": 20,
                "filters": {"category": ["no-such"]},
                "parallel": {"attribute": "category", "groups": 3},
            },
        )
        assert city.status_code == 200 and city.json()["items"] == []
