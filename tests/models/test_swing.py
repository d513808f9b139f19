"""Swing: pairs of users who share little else make two items similar, pairs of look-alikes little."""

from __future__ import annotations

import pandas as pd
import pytest

from embrecall.config import SwingConfig
from embrecall.data.log import MemoryLog
from embrecall.models.swing import Swing


def test_a_pair_of_users_who_share_only_two_items_outweighs_a_pair_who_share_ten():
    rows = [(u, i, t) for u in ("u1", "u2") for t, i in enumerate("ab")]  # u1, u2: a and b only
    rows += [(u, i, t) for u in ("u3", "u4") for t, i in enumerate(["a", "c", *(f"x{n}" for n in range(8))])]
    model = Swing(SwingConfig(alpha=1.0)).fit(
        MemoryLog(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    )
    similar = dict(model.similar("a", 5))
    # sim(a, b): the ordered pairs (u1, u2), (u2, u1), each w^2 / (1 + 2) with w = (2 + 5)^-0.35
    assert similar["b"] == pytest.approx(2 * 7**-0.7 / 3, rel=1e-5)
    # sim(a, c): u3 and u4 share all ten items: w = (10 + 5)^-0.35, over 1 + 10
    assert similar["c"] == pytest.approx(2 * 15**-0.7 / 11, rel=1e-5)
    assert list(similar)[0] == "b" and "a" not in similar


def test_only_each_items_latest_users_are_counted():
    rows = [(f"old{u}", i, t) for u in range(3) for t, i in enumerate("pq")]  # p and q, long ago
    rows += [(f"new{u}", i, 100 + t) for u in range(3) for t, i in enumerate("pr")]  # p and r, lately
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    recent = Swing(SwingConfig(max_users=3)).fit(MemoryLog(events))
    assert [i for i, _ in recent.similar("p")] == ["r"]  # p's three latest users took r, not q
    both = Swing(SwingConfig(max_users=6)).fit(MemoryLog(events))
    assert {i for i, _ in both.similar("p")} == {"q", "r"}
