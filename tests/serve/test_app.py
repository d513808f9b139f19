"""The recall service over a tiny bundle, on each index backend: answers, filters, exclusions, item
changes, bounds, auth."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from embrecall import Bundle
from embrecall.serve.app import create_app
from embrecall.serve.schemas import UserEvents
from embrecall.serve.settings import ServeConfig

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles[0]


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def client(request, bundle, tmp_path_factory):
    """The service with item vectors in process (FAISS) or in an embedded Milvus (milvus-lite)."""
    milvus = None
    if request.param == "milvus":
        pytest.importorskip("milvus_lite", reason="the Milvus backend tests need pip install 'embrecall[milvus]'")
        milvus = str(tmp_path_factory.mktemp("milvus") / "items.db")
    with TestClient(
        create_app(
            ServeConfig(source=bundle, admin_token=TOKEN, index={"backend": "milvus", "uri": milvus} if milvus else {})
        )
    ) as c:
        yield c


def test_recall_for_a_known_user(client, bundle):
    b = Bundle.load(bundle)
    user = b.users.index[0]
    r = client.post("/v1/recall", json={"user_id": user, "k": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 50 == len(set(ids))
    assert not set(ids) & set(b.users.at[user, "items"])  # seen items are dropped
    assert {i["channel"] for i in body["items"]} <= {*b.config.channels.serve, "popular"}  # served, fallback
    assert body["version"] == b.version and not body["cold_start"]
    assert {"profile", "embed", "search", "merge", "total"} <= set(body["timings_ms"])


def test_filters_and_exclusions_still_give_k_items(client, bundle):
    b = Bundle.load(bundle)
    user = b.users.index[1]
    wanted = b.items["category"].value_counts().index[:3].tolist()
    excluded = b.items.index[:5].tolist()
    eligible = set(b.items.index[b.items["category"].isin(wanted)]) - set(excluded) - set(b.users.at[user, "items"])
    for k in (5, len(eligible), len(eligible) + 10):  # k results whenever k eligible items exist, else all of them
        r = client.post(
            "/v1/recall", json={"user_id": user, "k": k, "filters": {"category": wanted}, "exclude": excluded}
        )
        assert r.status_code == 200, r.text
        ids = [i["item_id"] for i in r.json()["items"]]
        assert len(ids) == min(k, len(eligible))
        assert set(ids) <= eligible


def test_unknown_user_is_served_cold(client):
    r = client.post("/v1/recall", json={"user_id": "never-seen", "k": 10, "context": {"city": "city1"}})
    assert r.status_code == 200 and r.json()["cold_start"] and len(r.json()["items"]) == 10


def test_batch_answers_each_request_as_recall_does(client, bundle):
    users = Bundle.load(bundle).users.index[:3].tolist()
    requests = [
        {"user_id": users[0], "k": 5},
        {"user_id": users[1], "k": 7, "exclude": ["i1", "i2"]},
        {"user_id": users[2], "k": 5, "filters": {"category": ["c1"]}},
        {"user_id": "never-seen", "k": 3, "recent_items": ["i4"]},
    ]
    r = client.post("/v1/recall/batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    answers = r.json()["responses"]
    assert [a["user_id"] for a in answers] == [q["user_id"] for q in requests]
    for q, a in zip(requests, answers):  # one tower run and one index search, the same items
        alone = client.post("/v1/recall", json=q).json()
        assert [i["item_id"] for i in a["items"]] == [i["item_id"] for i in alone["items"]]
        assert a["cold_start"] == alone["cold_start"]
    bad = client.post(
        "/v1/recall/batch", json={"requests": [requests[0], {"user_id": "u1", "filters": {"nope": ["x"]}}]}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "requests", 1]
    assert "cannot filter on ['nope']" in bad.json()["detail"][0]["msg"]


def test_new_item_is_retrievable_and_deleted_item_is_gone(client, bundle):
    b = Bundle.load(bundle)
    item = {"category": "c-new", "city": "city1", "price": 10.0, "title": "brand new"}
    assert client.put("/v1/items/fresh-1", json={"attributes": item}).status_code == 401
    r = client.put("/v1/items/fresh-1", json={"attributes": item}, headers=AUTH)
    assert r.status_code == 200, r.text
    found = client.post(
        "/v1/recall", json={"user_id": b.users.index[0], "k": 5, "filters": {"category": ["c-new"]}}
    ).json()["items"]
    assert [i["item_id"] for i in found] == ["fresh-1"]
    assert client.delete("/v1/items/fresh-1", headers=AUTH).status_code == 200
    found = client.post(
        "/v1/recall", json={"user_id": b.users.index[0], "k": 5, "filters": {"category": ["c-new"]}}
    ).json()["items"]
    assert found == []
    assert client.delete("/v1/items/fresh-1", headers=AUTH).status_code == 404


def test_bad_requests_get_4xx_with_a_reason(client):
    r = client.post("/v1/recall", json={"user_id": "u1", "k": 5000})
    assert r.status_code == 422 and "less than or equal to 1000" in r.text
    r = client.post("/v1/recall", json={"user_id": "u1", "filters": {"colour": ["red"]}})
    assert r.status_code == 422 and "cannot filter on ['colour']" in r.text
    r = client.post("/v1/recall", content=b"x" * ((1 << 20) + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert (
        client.post("/v1/recall", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    )


def test_the_contract_nits_of_the_hardening_round(client):
    """A body that is not UTF-8 gets the documented 422 on every body-taking endpoint, a method an
    item path lacks gets 405 naming both it has, and an event's timestamp cannot be a bool."""
    auth = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    for method, path in [("POST", "/v1/recall"), ("POST", "/v1/recall/batch"), ("PUT", "/v1/items/i1")]:
        r = client.request(method, path, content=b'{"user_id": "\xff\xfe"}', headers=auth)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"], (path, r.text)
    r = client.options("/v1/items/i1", headers=auth)
    assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"PUT", "DELETE"}
    with pytest.raises(ValidationError, match="timestamp"):
        UserEvents.model_validate({"events": [{"user_id": "u0", "item_id": "i1", "timestamp": False}]})


@pytest.mark.parametrize(
    "body, where",
    [
        ('{"user_id": "u0", "k": 1e400}', ["body", "k"]),
        ('{"user_id": "u0", "k": NaN}', ["body", "k"]),
        ('{"user_id": "u0", "quotas": {"two_tower": NaN}}', ["body", "quotas", "two_tower"]),
        ('{"user_id": "u0", "quotas": {"two_tower": false}}', ["body", "quotas", "two_tower"]),
        ('{"user_id": "\\ud800"}', ["body", "user_id"]),
        ('{"user_id": "u0", "context": {"city": "\\ud800"}}', ["body", "context", "city"]),
        ('{"user_id": "u0", "context": {"\\ud800": 1}}', ["body", "context"]),
        ('{"user_id": "u0", "context": {"timestamp": 1e300}}', ["body"]),
        ('{"user_id": "u0", "context": {"timestamp": Infinity}}', ["body", "context", "timestamp"]),
        ('{"user_id": "u0", "context": {"n": 123456789012345678901234567890}}', ["body", "context", "n"]),
    ],
)
def test_unwritable_values_get_a_422_that_says_where(client, body, where):
    """NaN, overflowing numbers and lone surrogates: refused at the edge with their location, and the
    answer itself never echoes them (it could not be written: a 500 that also dropped the connection)."""
    r = client.post("/v1/recall", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: len(where)] == where
    assert client.post("/v1/recall", json={"user_id": "u0", "k": 3}).status_code == 200  # the connection goes on


def test_batches_are_bounded_by_their_total_work(client):
    batch = {"requests": [{"user_id": f"u{i}", "k": 1000} for i in range(26)]}
    r = client.post("/v1/recall/batch", json=batch)
    assert r.status_code == 422 and "at most 25,600" in r.text
    batch["requests"] = batch["requests"][:25]
    assert client.post("/v1/recall/batch", json=batch).status_code == 200
    parallel = {
        "requests": [
            {"user_id": f"u{i}", "k": 1000, "parallel": {"attribute": "category", "groups": 4}} for i in range(6)
        ]
    }  # each counts five times: its four groups and the plain list
    r = client.post("/v1/recall/batch", json=parallel)
    assert r.status_code == 422 and "30,000 items in all" in r.text


def test_non_finite_attributes_never_reach_the_index(client):
    r = client.put(
        "/v1/items/inf-1",
        content='{"attributes": {"price": Infinity}}',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "attributes", "price"]
    assert client.delete("/v1/items/inf-1", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "header, status",
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
        (f"BEARER {TOKEN}", 200),
        (TOKEN, 401),
        (f"Basic {TOKEN}", 401),
        ("Bearer wrong", 401),
    ],
)
def test_admin_token_needs_the_bearer_scheme_in_any_case(client, header, status):
    r = client.put("/v1/items/auth-1", json={"attributes": {"category": "c1"}}, headers={"Authorization": header})
    assert r.status_code == status, r.text


def test_version_health_metrics(client, bundle):
    assert client.get("/v1/version").json()["version"] == Bundle.load(bundle).version
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").json() == {"ready": True}
    client.post("/v1/recall", json={"user_id": "u1", "k": 5})
    client.post("/v1/recall", json={"user_id": "u1", "k": 5000})
    text = client.get("/metrics").text
    assert "embrecall_stage_seconds_bucket" in text and "embrecall_index_items" in text
    assert 'embrecall_errors_total{status="422"}' in text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values,
        "k": json_values,
        "filters": json_values,
        "exclude": json_values,
        "recent_items": json_values,
        "context": json_values,
        "quotas": json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies)
def test_fuzzed_bodies_never_cause_a_5xx(client, body):
    assert client.post("/v1/recall", json=body).status_code < 500


def test_with_no_channel_given_a_share_the_fallback_fills_every_slot(client, bundle):
    user = Bundle.load(bundle).users.index[0]
    body = client.post("/v1/recall", json={"user_id": user, "k": 5, "quotas": {"two_tower": 0}}).json()
    assert [i["channel"] for i in body["items"]] == ["popular"] * 5
