"""Entity recall: entity vectors from item vectors, the baseline, and the protocol on the held-out item's value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embrecall.data.split import leave_last_out
from embrecall.errors import DataError
from embrecall.evaluation.entities import evaluate_entities
from embrecall.models.channel import UserQuery
from embrecall.models.entities import Entities, EntityRecall, HistoryEntities

ITEMS = pd.DataFrame({"genres": ["a", "a|b", "b", None, "c"]}, index=pd.Index(["i0", "i1", "i2", "i3", "i4"]))
VECTORS = np.array([[1, 0], [0.6, 0.8], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)


def test_a_value_scores_the_log_of_its_items_softmax_mass():
    entities = Entities.of("genres", ITEMS, list(ITEMS.index))
    assert sorted(entities.values) == ["a", "b", "c"]  # i3 has no value: it belongs to none
    user = np.array([[0.3, 0.9]], dtype=np.float32)
    recall = EntityRecall(entities, lambda qs: np.repeat(user, len(qs), axis=0), VECTORS, temperature=0.5)
    got = recall.recommend([UserQuery("u")], 3)[0]
    logits = (VECTORS @ user[0]) / 0.5
    mass = {
        "a": np.exp(logits[0]) + np.exp(logits[1]),
        "b": np.exp(logits[1]) + np.exp(logits[2]),
        "c": np.exp(logits[4]),
    }  # i1 counts for a and for b
    assert got.item_ids == sorted(mass, key=lambda v: -mass[v])
    np.testing.assert_allclose(got.scores, [np.log(mass[v]) for v in got.item_ids], rtol=1e-5)
    assert len(recall.recommend([UserQuery("u")], 2)[0].item_ids) == 2
    assert len(recall.recommend([UserQuery("u")], 50)[0].item_ids) == 3  # no more than there are


def test_many_likely_items_outrank_one_close_item():
    items = pd.DataFrame({"brand": ["big"] * 10 + ["niche"]}, index=pd.Index([f"i{n}" for n in range(11)]))
    vectors = np.array([[0.9, 0.436]] * 10 + [[1.0, 0.0]], dtype=np.float32)
    recall = EntityRecall(
        Entities.of("brand", items, list(items.index)),
        lambda qs: np.array([[1.0, 0.0]] * len(qs), dtype=np.float32),
        vectors,
        temperature=0.05,
    )
    assert recall.recommend([UserQuery("u")], 2)[0].item_ids == ["big", "niche"]


def test_an_unknown_attribute_is_a_message():
    with pytest.raises(DataError, match="no item attribute 'brand'.*genres"):
        Entities.of("brand", ITEMS, list(ITEMS.index))


def test_the_history_baseline_weighs_recent_values_first_then_popular_ones():
    events = pd.DataFrame({"user_id": ["x"] * 4, "item_id": ["i4", "i4", "i4", "i0"], "timestamp": range(4)})
    base = HistoryEntities(ITEMS, "genres", events, history=2, decay=0.5)
    assert base.recommend([UserQuery("u", ("i2", "i0"))], 3)[0].item_ids == ["a", "b", "c"]  # a: 1, b: 0.5, then c
    assert base.recommend([UserQuery("new")], 2)[0].item_ids == ["c", "a"]  # most clicked values
    popular = HistoryEntities(ITEMS, "genres", events, history=0)
    assert popular.recommend([UserQuery("u", ("i2",))], 1)[0].item_ids == ["c"]


def test_a_hit_is_any_value_of_the_held_out_item():
    events = pd.DataFrame(
        {
            "user_id": ["u"] * 3 + ["v"] * 3,
            "item_id": ["i0", "i2", "i1", "i0", "i2", "i4"],
            "timestamp": list(range(3)) * 2,
        }
    )
    split = leave_last_out(events)  # targets: u -> i1 (a|b), v -> i4 (c)

    class Fixed:
        name = "fixed"

        def recommend(self, queries, k, exclude=None, filters=None, timings=None):
            from embrecall.models.channel import Candidates

            lists = {"u": ["c", "b", "a"], "v": ["a", "b", "c"]}
            return [Candidates(lists[q.user_id][:k], np.zeros(3), ["fixed"] * 3) for q in queries]

    m = evaluate_entities(Fixed(), split, ITEMS, "genres", [1, 2])
    assert m["targets"] == 2 and m["values"] == 2  # a and b were clicked in train + validation
    assert m["HR@1"] == 0.0 and m["HR@2"] == 0.5  # u's best value (b) at rank 2; v's c at rank 3
    assert m["MRR"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_users_are_scored_a_few_at_a_time_with_the_same_answer(monkeypatch):
    from embrecall.models import entities as module

    users = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    recall = EntityRecall(Entities.of("genres", ITEMS, list(ITEMS.index)), lambda qs: users[: len(qs)], VECTORS, 0.3)
    queries = [UserQuery(f"u{i}") for i in range(7)]
    whole = recall.recommend(queries, 3)
    monkeypatch.setattr(module, "SCORES_AT_ONCE", 10)  # two users of five items at a time
    parts = recall.recommend(queries, 3)
    assert [c.item_ids for c in parts] == [c.item_ids for c in whole]
    np.testing.assert_allclose(np.stack([c.scores for c in parts]), np.stack([c.scores for c in whole]), rtol=1e-6)
