"""Metrics: worked examples, agreement with scikit-learn, invariants, and the ml-100k conformance figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embrecall.data.log import MemoryLog
from embrecall.data.movielens import read_movielens
from embrecall.data.split import leave_last_out
from embrecall.evaluation import evaluate_channel, ranking_metrics
from embrecall.models.popular import Popular


def test_worked_example():
    # user 0 hits at rank 0, user 1 at rank 4, user 2 misses.
    m = ranking_metrics(np.array([0, 4, -1]), [["a", "b"], ["a", "c"], ["d"]], catalog_size=8, ks=[1, 5])
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["NDCG@5"] == pytest.approx((1.0 + 1 / math.log2(6)) / 3)
    assert m["MRR"] == pytest.approx((1.0 + 1 / 5) / 3)
    assert m["coverage@1"] == pytest.approx(2 / 8)  # a, d
    assert m["coverage@5"] == pytest.approx(4 / 8)  # a, b, c, d
    assert m["avg_position@100"] == pytest.approx((1 + 5) / 2)  # positions 1 and 5; the miss has none
    assert ranking_metrics(np.array([-1, 100]), [[]], 8, [1])["avg_position@100"] == 0.0  # no hit in the top 100


@given(st.lists(st.integers(-1, 150), min_size=1, max_size=50))
def test_hr_and_ndcg_never_fall_as_k_grows(ranks):
    m = ranking_metrics(np.array(ranks), [[] for _ in ranks], 10, [1, 5, 10, 20, 50, 100])
    for a, b in zip([1, 5, 10, 20, 50], [5, 10, 20, 50, 100]):
        assert m[f"HR@{a}"] <= m[f"HR@{b}"]
        assert m[f"NDCG@{a}"] <= m[f"NDCG@{b}"] + 1e-12


def test_agrees_with_scikit_learn():
    """HR@K, NDCG@K and MRR against scikit-learn's top-k accuracy, NDCG and ranking precision
    (one relevant item per user: label-ranking average precision is its reciprocal rank)."""
    from sklearn.metrics import label_ranking_average_precision_score, ndcg_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    users, items = 60, 300
    lists = [list(rng.choice(items, 100, replace=False)) for _ in range(users)]
    targets = np.array([int(rng.choice(items)) for _ in range(users)])
    ranks = np.array([ranked.index(t) if t in ranked else -1 for ranked, t in zip(lists, targets)])
    ours = ranking_metrics(ranks, [[str(i) for i in ranked] for ranked in lists], items, [10, 20, 50, 100])
    score = np.zeros((users, items))  # items left off a list score below every listed one
    for u, ranked in enumerate(lists):
        score[u, ranked] = 100.0 - np.arange(len(ranked))
    relevant = np.zeros((users, items))
    relevant[np.arange(users), targets] = 1
    labels = np.arange(items)
    for k in (10, 100):
        assert ours[f"HR@{k}"] == pytest.approx(top_k_accuracy_score(targets, score, k=k, labels=labels))
    for k in (10, 50):
        assert ours[f"NDCG@{k}"] == pytest.approx(ndcg_score(relevant, score, k=k))
    listed = ranks >= 0
    reciprocal = label_ranking_average_precision_score(relevant[listed], score[listed]) * listed.mean()
    assert ours["MRR"] == pytest.approx(reciprocal)


def test_ml100k_conformance(ml100k):
    """BENCHMARK.md: 943 test users, 1,679 catalog items, 3 misses; popularity HR@10 0.0859 ..."""
    split = leave_last_out(read_movielens(ml100k).events)
    assert len(split.test) == 943
    assert split.train_full["item_id"].nunique() == 1679
    assert int((~split.test["item_id"].isin(split.train_full["item_id"])).sum()) == 3
    m = evaluate_channel(Popular().fit(MemoryLog(split.train_full)), split, [10, 100])
    assert round(m["HR@10"], 4) == 0.0859
    assert round(m["NDCG@10"], 4) == 0.0449
    assert 0.318 <= m["HR@100"] <= 0.319
