"""EASE: the closed form equals a direct solve, recency weights the profile, big catalogs are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embrecall.config import EaseConfig
from embrecall.data.log import MemoryLog
from embrecall.errors import ConfigError
from embrecall.models.channel import UserQuery
from embrecall.models.ease import Ease, ease_weights


def test_closed_form_equals_a_direct_constrained_solve():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(np.float64)
    l2 = 3.0
    b = ease_weights(x.T @ x, l2)
    for j in range(6):  # column j: ridge regression of item j on every other item
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        direct = np.linalg.solve(a.T @ a + l2 * np.eye(5), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], direct, rtol=1e-8, atol=1e-10)
        assert b[j, j] == 0.0


def test_recent_items_weigh_more_and_seen_items_are_excluded():
    events = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c"], "item_id": ["x", "y", "x", "z", "y", "w"]})
    model = Ease(EaseConfig(l2=0.5, decay=0.5)).fit(MemoryLog(events))
    profile = model.profiles([UserQuery("q", ("x", "y"))]).toarray()[0]
    assert profile[model._position["y"]] == 1.0 and profile[model._position["x"]] == 0.5
    top = model.recommend([UserQuery("q", ("x", "y"))], 2, [{"x", "y"}])[0]
    assert set(top.item_ids) == {"z", "w"} and top.channels == ["ease", "ease"]


def test_catalog_too_large_for_a_dense_matrix_is_refused():
    events = pd.DataFrame({"user_id": ["a"] * 5, "item_id": list("abcde")})
    with pytest.raises(ConfigError, match="channels.ease.max_items"):
        Ease(EaseConfig(max_items=4)).fit(MemoryLog(events))


def test_items_under_the_frequency_floor_are_left_out_and_the_rest_fit():
    events = pd.DataFrame({"user_id": list("aabbccd"), "item_id": ["x", "y", "x", "y", "x", "z", "w"]})
    with pytest.raises(ConfigError, match="channels.ease.min_count"):
        Ease(EaseConfig(max_items=2)).fit(MemoryLog(events))
    model = Ease(EaseConfig(max_items=2, min_count=2)).fit(MemoryLog(events))
    assert set(model.item_ids_) == {"x", "y"}
    assert model.recommend([UserQuery("q", ("x", "w"))], 5, [{"x", "w"}])[0].item_ids == ["y"]


def test_in_place_cholesky_inverse_matches_numpy_beyond_one_block():
    rng = np.random.default_rng(1)
    x = (rng.random((400, 1100)) < 0.02).astype(np.float64)
    gram = x.T @ x
    p = np.linalg.inv(gram + 7.0 * np.eye(1100))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(gram.copy(), 7.0), expected, atol=1e-9)
