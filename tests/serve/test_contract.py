"""The OpenAPI document tells the truth: schemathesis generates requests from it (valid and
invalid ones) against the app in process, with the admin token, the client token and none, and every answer
must be documented there and be no 5xx.

One check is left out: "schema-valid data is accepted".  Whether a request can be served also
depends on the loaded version (a filter on an attribute it has, a quota for a channel it
serves, a context timestamp in 1970..2100), which a 422 names and a schema cannot say."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the API contract test needs pip install schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from embrecall.serve.app import create_app  # noqa: E402
from embrecall.serve.settings import ServeConfig  # noqa: E402

TOKEN, CLIENT = "s3cret", "cl1ent"


@pytest.fixture(scope="module")
def api(tiny_bundles):
    bundle = tiny_bundles[0]
    app = create_app(ServeConfig(source=bundle, admin_token=TOKEN, client_token=CLIENT))
    with TestClient(app):  # runs the lifespan: the service is loaded while schemathesis calls the app
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
REFUSED = settings(FUZZ, max_examples=50)


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {CLIENT}"}, {}],
    ids=["admin-token", "client-token", "no-token"],
)
def test_every_answer_is_documented_and_no_5xx(api, headers):
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/recall", "POST /v1/recall/batch", "PUT /v1/items/{item_id}"}
    if headers.get("Authorization") == f"Bearer {CLIENT}":  # elsewhere the client token is one more wrong token
        operations = [op for op in operations if op.label == "POST /v1/events"]
    fuzz = FUZZ if headers else REFUSED  # without a token every admin call is the same 401
    for operation in operations:

        @given(case=operation.as_strategy())
        @fuzz
        def calls(case):
            case.call_and_validate(headers=headers, excluded_checks=[schemathesis.checks.positive_data_acceptance])

        calls()
