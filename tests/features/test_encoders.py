"""Encoders: vocabularies with OOV, hashing, numbers, multi-valued columns, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from embrecall.config import FeaturesConfig
from embrecall.errors import NotFittedError
from embrecall.features import Encoders

SPEC = FeaturesConfig.model_validate(
    {
        "user": [
            {"kind": "categorical", "name": "user_id"},
            {"kind": "categorical", "name": "city", "min_count": 2},
            {"kind": "hashed", "name": "zip", "buckets": 50},
            {"kind": "numeric", "name": "age", "transform": "bucketize", "buckets": 4},
            {"kind": "history", "name": "recent", "max_len": 3},
            {"kind": "time", "name": "hour", "part": "hour"},
        ],
        "item": [
            {"kind": "item_id"},
            {"kind": "multi", "name": "genres", "max_len": 3},
            {"kind": "numeric", "name": "price", "transform": "standardize"},
        ],
    }
)
EVENTS = pd.DataFrame(
    {"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "b", "a", "c"], "timestamp": [0, 3600, 7200, 10800]}
)
USERS = pd.DataFrame(
    {"city": ["x", "x", "y"], "zip": ["01234", "99999", "01234"], "age": [20, 40, 60]},
    index=pd.Index(["u1", "u2", "u3"]),
)
ITEMS = pd.DataFrame({"genres": ["A|B", "B", ""], "price": [1.0, 2.0, 3.0]}, index=pd.Index(["a", "b", "c"]))


def _fitted() -> Encoders:
    return Encoders(SPEC).fit(EVENTS, USERS, ITEMS)


def test_categorical_min_count_and_oov():
    enc = _fitted()
    out = enc.encode_users(pd.Index(["u1", "u3", "new"]), USERS, EVENTS.iloc[:3], history=None)
    # city 'x' seen twice -> kept (index 2); 'y' seen once < min_count -> OOV (1); unknown user -> 0 (no row)
    assert out["city"].tolist() == [2, 1, 0]
    assert out["user_id"].tolist()[2] == 1  # unseen user id -> OOV
    assert out["hour"].tolist() == [1, 2, 3]  # hours 0, 1, 2 (+1: 0 is padding)


def test_hashing_is_stable_and_in_range():
    enc = _fitted()
    a = enc.encode_users(pd.Index(["u1", "u3"]), USERS, EVENTS.iloc[:2], history=None)["zip"]
    assert a[0] == a[1]  # the same zip, the same bucket
    assert 2 <= a[0] < 52


def test_multi_valued_and_numeric_items():
    enc = _fitted()
    out = enc.encode_items(ITEMS)
    assert out["item_id"].tolist() == [1, 2, 3]
    assert out["genres"].tolist() == [[2, 3, 0], [3, 0, 0], [0, 0, 0]]
    assert out["price"] == pytest.approx(np.array([-1.2247, 0.0, 1.2247]), abs=1e-4)


def test_history_matrix_most_recent_first_skips_unknown():
    enc = _fitted()
    h = enc.history_matrix([["a", "zzz", "b"], []])
    assert h.tolist() == [[2, 1, 0], [0, 0, 0]]  # b (idx 1) then a (idx 0), +1; zzz is not in the catalog


def test_json_round_trip_gives_identical_encodings():
    enc = _fitted()
    again = Encoders.from_json(SPEC, json.loads(json.dumps(enc.to_json())))
    for k, v in enc.encode_items(ITEMS).items():
        np.testing.assert_array_equal(v, again.encode_items(ITEMS)[k])


def test_not_fitted():
    with pytest.raises(NotFittedError, match="is not fitted yet. Call 'fit'"):
        Encoders(SPEC).encode_items(ITEMS)


def test_every_missing_column_is_named_at_once():
    """A MovieLens release without demographics: all four user features named, not the first one."""
    from embrecall.errors import DataError

    with pytest.raises(
        DataError,
        match=r"3 feature\(s\) read columns the data does not have: features.user 'city' "
        r"reads user column 'city' \(there is no user table\); .*'zip'.*'age'",
    ):
        Encoders(SPEC).fit(EVENTS, None, ITEMS)
