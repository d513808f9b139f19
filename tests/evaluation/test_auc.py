"""AUC against sampled negatives and the average position agree with direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from embrecall.data.log import MemoryLog
from embrecall.evaluation.metrics import auc_against
from embrecall.evaluation.protocol import build_queries, evaluate_channel, sampled_auc
from embrecall.models.popular import Popular


@given(st.floats(-3, 3), st.lists(st.integers(-3, 3).map(float), min_size=1, max_size=30))
def test_one_users_auc_is_roc_auc_score(target, negatives):
    expected = roc_auc_score([1] + [0] * len(negatives), [target, *negatives])
    assert auc_against(target, np.asarray(negatives)) == pytest.approx(expected)


class _Fixed:
    """Scores each user's held-out item ``target_score`` and every other item 1."""

    name = "fixed"

    def __init__(self, held_out: dict[str, str], target_score: float):
        self.held_out, self.target_score = held_out, target_score

    def score(self, queries, items):
        return [
            np.asarray([self.target_score if i == self.held_out[q.user_id] else 1.0 for i in wanted], dtype=np.float32)
            for q, wanted in zip(queries, items)
        ]


@pytest.fixture
def world():
    rng = np.random.default_rng(0)
    import pandas as pd

    items = [f"i{n}" for n in range(300)]
    train = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{n}" for n in range(20)], 5),
            "item_id": rng.choice(items, 100),
            "timestamp": np.arange(100),
        }
    )
    test = pd.DataFrame({"user_id": [f"u{n}" for n in range(20)], "item_id": items[:20], "timestamp": 200})
    queries, exclude = build_queries(train, test)
    return queries, exclude, test["item_id"].to_numpy(), set(items)


def test_sampled_auc_is_one_zero_or_a_half_as_the_held_out_items_rank(world):
    queries, exclude, targets, catalog = world
    held_out = {q.user_id: t for q, t in zip(queries, targets)}
    for score, auc in ((10.0, 1.0), (0.0, 0.0), (1.0, 0.5)):
        assert sampled_auc(_Fixed(held_out, score), queries, exclude, targets, catalog) == auc


def test_evaluate_reports_auc_for_channels_that_score_and_the_average_position(world):
    from embrecall.data.split import Split

    queries, exclude, targets, catalog = world
    import pandas as pd

    train = pd.DataFrame(
        [(q.user_id, i, t) for q in queries for t, i in enumerate(q.history)],
        columns=["user_id", "item_id", "timestamp"],
    )
    test = pd.DataFrame({"user_id": [q.user_id for q in queries], "item_id": targets, "timestamp": 999})
    split = Split(train=train, valid=train.iloc[:0], train_full=train, test=test)
    metrics = evaluate_channel(Popular().fit(MemoryLog(train)), split, [10, 100])
    assert 0.0 <= metrics["AUC"] <= 1.0 and "avg_position@100" in metrics


def test_auc_against_shown_items_takes_what_was_shown_since_the_last_click_and_agrees_with_sklearn():
    import pandas as pd

    from embrecall.data.split import Split
    from embrecall.evaluation.protocol import shown_auc, shown_items

    train = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "timestamp": [10, 20, 10]})
    test = pd.DataFrame({"user_id": ["u", "v"], "item_id": ["t", "t"], "timestamp": [30, 30]})
    shown = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "u", "v", "v"],
            "item_id": ["old", "x", "y", "b", "t", "z", "late"],
            "timestamp": [15, 25, 29, 25, 30, 12, 31],
        }
    )
    queries, exclude = build_queries(train, test)
    got = shown_items(train, test, shown, exclude)
    # u: after its last click (20) up to the target (30), less its own item b and the target; v: after 10
    assert got == [["x", "y"], ["z"]]
    scores = {"t": 0.5, "x": 0.9, "y": 0.1, "z": 0.2}

    class Scores:
        def score(self, qs, items):
            return [np.asarray([scores[i] for i in wanted]) for wanted in items]

    expected = np.mean([roc_auc_score([1, 0, 0], [0.5, 0.9, 0.1]), roc_auc_score([1, 0], [0.5, 0.2])])
    assert shown_auc(Scores(), queries, test["item_id"].to_numpy(), got) == pytest.approx(expected)
    split = Split(train=train, valid=train.iloc[:0], train_full=train, test=test)
    metrics = evaluate_channel(Popular().fit(MemoryLog(train)), split, [10], exposures=shown)
    assert "AUC_shown" in metrics and "AUC_shown" not in evaluate_channel(Popular().fit(MemoryLog(train)), split, [10])
