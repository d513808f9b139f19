"""Training examples see only the past: the history of an event holds earlier events of its user."""

from __future__ import annotations

import numpy as np
import pandas as pd

from embrecall.config import FeaturesConfig
from embrecall.features import Encoders
from embrecall.models.channel import user_histories
from embrecall.training.examples import Examples
from embrecall.training.sources import Recent

SPEC = FeaturesConfig.model_validate(
    {
        "user": [{"kind": "history", "name": "recent", "max_len": 3}],
        "item": [{"kind": "item_id"}],
    }
)


def test_history_holds_only_earlier_events_of_the_same_user_most_recent_first():
    events = pd.DataFrame(
        {
            "user_id": ["u", "v", "u", "u", "u", "v"],
            "item_id": ["a", "x", "b", "c", "d", "y"],
            "timestamp": [1, 1, 2, 3, 4, 2],
        }
    )
    enc = Encoders(SPEC).fit(events, None, None)
    ex = Examples(events, enc, None, None)
    hist = ex.user_batch(np.arange(len(ex)))["recent"].numpy()
    catalog = list(enc.catalog_)
    decoded = [[catalog[i - 1] for i in row if i > 0] for row in hist]
    # sorted order: u's a, b, c, d then v's x, y
    assert decoded == [[], ["a"], ["b", "a"], ["c", "b", "a"], [], ["x"]]


def test_a_training_history_is_what_serving_builds_from_the_users_history_so_far():
    rng = np.random.default_rng(0)
    events = pd.DataFrame(
        {
            "user_id": rng.choice(["u", "v", "w"], 60),
            "item_id": rng.choice(list("abcdefgh"), 60),
            "timestamp": rng.integers(0, 20, 60),
        }
    )
    enc = Encoders(SPEC).fit(events, None, None)
    ex = Examples(events, enc, None, None)
    served = []
    for _, history in sorted(user_histories(events).items()):  # Examples orders rows by user, then time
        served += [list(history[:n]) for n in range(len(history))]
    np.testing.assert_array_equal(ex.history(np.arange(len(ex))), enc.history_matrix(served))


def test_a_warm_update_walks_the_new_rows_or_windows_and_a_fresh_replay_of_older_ones():
    spec = FeaturesConfig.model_validate(
        {"user": [{"kind": "sequence", "name": "seq", "max_len": 2}], "item": [{"kind": "item_id"}]}
    )
    events = pd.DataFrame(
        {"user_id": ["u"] * 5 + ["v"] * 3, "item_id": list("abcdexyz"), "timestamp": [1, 2, 3, 4, 5, 1, 2, 9]}
    )
    ex = Examples(events, Encoders(spec).fit(events, None, None), None, None)
    windows, times = ex.units(windowed=True)  # u: rows 0-1, 2-3, 4; v: rows 5-6, 7
    assert windows.tolist() == [0, 2, 4, 5, 7]
    assert times.tolist() == [2, 4, 5, 2, 9]  # each window's last target
    recent = Recent(since=4, replay=1.0)
    rng = np.random.default_rng(0)
    picked = recent.pick(windows, times, rng)
    assert sorted(picked[:2].tolist()) == [4, 7] and len(picked) == 4 and set(picked[2:]) <= {0, 2, 5}
    rows = np.arange(len(ex))
    assert recent.count(ex.timestamp) == len(recent.pick(rows, ex.timestamp, rng)) == 4  # 2 new rows, 2 older
