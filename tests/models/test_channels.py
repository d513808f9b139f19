"""Channel mechanics on tiny logs whose right answer is obvious."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embrecall.config import Item2VecConfig, ItemCFConfig
from embrecall.data.log import MemoryLog
from embrecall.data.split import cold_item_split
from embrecall.models.channel import Candidates, UserQuery
from embrecall.models.dither import Dithered
from embrecall.models.item2vec import Item2Vec, session_starts
from embrecall.models.itemcf import ItemCF
from embrecall.models.merge import merge_by_quota, merge_by_rrf


def test_itemcf_neighbours_and_popularity_normalisation():
    # a and b always follow each other; c is popular and sits next to everything once.
    rows = []
    for u in range(6):
        rows += [(f"u{u}", "a", 1), (f"u{u}", "b", 2), (f"u{u}", "c", 100 + u)]
    rows += [(f"v{u}", "c", 1) for u in range(20)] + [("w", "d", 1), ("w", "c", 2)]
    cf = ItemCF(ItemCFConfig(window=1, alpha=0.5)).fit(
        MemoryLog(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    )
    similar = dict(cf.similar("a"))
    assert set(similar) == {"b"}  # window 1: a only ever sits next to b
    assert similar["b"] == pytest.approx(6 / np.sqrt(6 * 6))  # cosine of counts: c_ab / sqrt(n_a n_b)
    assert cf.similar("b")[0][0] == "a"  # b-a (6 / 6) beats b-c (6 / sqrt(6 * 27))
    rec = cf.recommend([UserQuery("x", ("a",))], 2, [{"a"}])[0]
    assert rec.item_ids == ["b"]  # only a's neighbours can be scored


def test_itemcf_counted_block_by_block_equals_counted_at_once(monkeypatch):
    from embrecall.config import load_config
    from embrecall.data.load import load_dataset
    from embrecall.models import itemcf

    events = load_dataset(load_config(None, ["data.synthetic.events=20000"])).events
    whole = ItemCF(ItemCFConfig(window=4, neighbours=20)).fit(MemoryLog(events))
    monkeypatch.setattr(itemcf, "PAIR_BUDGET", 5_000)  # dozens of blocks
    assert len(itemcf._blocks(np.bincount([0, 1, 1, 2]) * 8.0, 10)) == 3
    parts = ItemCF(ItemCFConfig(window=4, neighbours=20)).fit(MemoryLog(events))
    assert whole.neighbours_.dtype == np.float32 and parts.neighbours_.shape == whole.neighbours_.shape
    assert (parts.neighbours_ != whole.neighbours_).nnz == 0
    assert np.array_equal(parts.item_ids_, whole.item_ids_)


def test_sessions_cut_on_user_change_and_inactivity():
    users = np.array(["u", "u", "u", "v"])
    ts = np.array([0, 10, 5000, 5001])
    assert session_starts(users, ts, gap=3600).tolist() == [True, False, True, True]


def test_item2vec_learns_session_neighbours_and_recommends_per_category():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(200):  # sessions stay inside one of two groups of items
        group = u % 2
        for s in range(3):
            for step in range(5):
                rows.append((f"u{u}", f"g{group}_{rng.integers(0, 10)}", s * 10_000 + step))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {"category": [f"c{i.split('_')[0]}" for i in events["item_id"].unique()]}, index=events["item_id"].unique()
    )
    model = Item2Vec(
        Item2VecConfig(dim=16, window=4, epochs=20, min_count=1, sample=0, session_gap=600, category_column="category")
    ).fit(MemoryLog(events), items)
    rec = model.recommend([UserQuery("x", ("g0_1", "g0_2"))], 5, [{"g0_1", "g0_2"}])[0]
    assert all(i.startswith("g0_") for i in rec.item_ids)
    mixed = model.recommend([UserQuery("y", ("g0_1", "g1_1", "g1_2"))], 6, [set()])[0]
    assert {i[:2] for i in mixed.item_ids} == {"g0", "g1"}  # one query per category, both represented


def _cands(ids, name):
    return Candidates(list(ids), np.linspace(1, 0, len(ids)).astype(np.float32), [name] * len(ids))


def test_quota_merge_interleaves_deduplicates_and_backfills():
    a, b = _cands("abcdef", "A"), _cands("bxy", "B")
    merged = merge_by_quota([a, b], [2, 1], 6)
    # shares 2:1 -> slots A, B, A, A, B, A; b is found by both and taken once (by B, whose turn came first),
    # so A's next turn skips it.
    assert merged.item_ids == ["a", "b", "c", "d", "x", "e"]
    assert merged.channels == ["A", "B", "A", "A", "B", "A"]
    assert merge_by_quota([a, _cands("", "B")], [1, 1], 4).item_ids == ["a", "b", "c", "d"]  # back-fill
    # A runs out at its third turn: the slots it leaves go to B
    assert merge_by_quota([_cands("ab", "A"), _cands("wxyz", "B")], [3, 1], 5).item_ids == ["a", "b", "w", "x", "y"]


def test_rrf_promotes_items_both_channels_find():
    merged = merge_by_rrf([_cands("abc", "A"), _cands("cde", "B")], [1, 1], 3)
    assert merged.item_ids[0] == "c"
    assert merged.channels[0] == "B"  # B ranks c first


def test_dithering_keeps_the_items_and_mixes_deeper_ranks_more():
    class Fixed:
        name = "fixed"

        def recommend(self, queries, k, exclude=None, filters=None, timings=None):
            return [_cands([str(i) for i in range(k)], "fixed") for _ in queries]

    d = Dithered(Fixed(), epsilon=3.0, seed=0)
    out = d.recommend([UserQuery("u")] * 300, 20)
    firsts = [int(c.item_ids[0]) for c in out]
    assert all(len(set(c.item_ids)) == 20 for c in out)
    assert np.mean(np.array(firsts) == 0) > 0.3  # the top stays mostly on top ...
    assert len({tuple(c.item_ids) for c in out}) > 250  # ... while the lists vary
    assert Dithered(Fixed(), epsilon=1.0).recommend([UserQuery("u")], 5)[0].item_ids == list("01234")


def test_cold_item_split_targets_first_contacts_with_new_items():
    events = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "v", "w"],
            "item_id": ["a", "n", "n", "a", "n", "m"],
            "timestamp": [1, 10, 11, 12, 13, 14],
        }
    )
    split = cold_item_split(events, test_start=10)
    assert split.test[["user_id", "item_id"]].values.tolist() == [["u", "n"]]  # v, w have no earlier history
    assert split.train_full["item_id"].tolist() == ["a"]


def test_item2vec_trains_one_model_per_group_and_queries_the_users_group():
    rows = []
    for u in range(60):
        city = "A" if u % 2 else "B"
        for step in range(6):
            rows.append((f"u{u}", f"{city.lower()}{(u + step) % 8}", step, city))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "city"])
    model = Item2Vec(Item2VecConfig(dim=8, window=3, epochs=5, min_count=1, sample=0, group_column="city")).fit(
        MemoryLog(events)
    )
    assert set(model.spaces_) == {None, "A", "B"}
    rec = model.recommend([UserQuery("x", ("a1",), {"city": "A"})], 5, [{"a1"}])[0]
    assert rec.item_ids and all(i.startswith("a") for i in rec.item_ids)  # the A model knows only A's items


def test_merging_no_lists_gives_an_empty_list():
    from embrecall.models.merge import merge_by_quota

    assert merge_by_quota([], [], 10).item_ids == []
