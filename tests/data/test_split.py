"""BENCHMARK.md's split: an exact partition, last event to test, ties kept in file order."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from embrecall.data.split import leave_last_out, time_split

events_strategy = st.lists(
    st.tuples(st.sampled_from("abcde"), st.sampled_from("vwxyz"), st.integers(0, 5)),
    min_size=1,
    max_size=60,
).map(lambda rows: pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def _keys(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame[["user_id", "item_id", "timestamp"]].itertuples(index=False)))


@settings(max_examples=150, deadline=None)
@given(events_strategy)
def test_leave_last_out_partitions_events_exactly(events):
    s = leave_last_out(events)
    assert _keys(pd.concat([s.train, s.valid, s.test])) == _keys(events)
    assert _keys(s.train_full) == _keys(pd.concat([s.train, s.valid]))
    counts = events["user_id"].value_counts()
    assert set(s.test["user_id"]) == set(counts[counts >= 3].index) == set(s.valid["user_id"])
    for _, row in s.test.iterrows():  # the test event is never earlier than any other event of the user
        assert row["timestamp"] >= events.loc[events["user_id"] == row["user_id"], "timestamp"].max()


def test_ties_keep_file_order():
    # u's three events share one timestamp: file order decides, so the last line is the test item.
    events = pd.DataFrame({"user_id": ["u", "u", "u", "u"], "item_id": ["a", "b", "c", "d"], "timestamp": [5, 9, 9, 9]})
    s = leave_last_out(events)
    assert s.test["item_id"].tolist() == ["d"]
    assert s.valid["item_id"].tolist() == ["c"]
    assert s.train["item_id"].tolist() == ["a", "b"]


def test_users_with_fewer_than_three_events_are_all_train():
    events = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]})
    s = leave_last_out(events)
    assert len(s.train) == 2 and len(s.test) == 0 and len(s.valid) == 0


def test_time_split_targets_are_first_events_after_each_cutoff():
    events = pd.DataFrame(
        {"user_id": ["u"] * 5 + ["v"], "item_id": list("abcdef"), "timestamp": [1, 2, 10, 11, 20, 15]}
    )
    s = time_split(events, valid_start=10, test_start=20)
    assert s.train["item_id"].tolist() == ["a", "b"]
    assert s.valid["item_id"].tolist() == ["c"]  # v has no history before 10: no target
    assert s.train_full["item_id"].tolist() == ["a", "b", "c", "d", "f"]
    assert s.test["item_id"].tolist() == ["e"]
