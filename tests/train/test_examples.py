"""Training examples see only the past: the history of an event holds earlier events of its user."""

from __future__ import annotations

import numpy as np
import pandas as pd

from embrecall.config import FeaturesConfig
from embrecall.features import Encoders
from embrecall.training.examples import Examples

SPEC = FeaturesConfig.model_validate({
    "user": [{"kind": "history", "name": "recent", "max_len": 3}],
    "item": [{"kind": "item_id"}],
})


def test_history_holds_only_earlier_events_of_the_same_user_most_recent_first():
    events = pd.DataFrame({"user_id": ["u", "v", "u", "u", "u", "v"],
                           "item_id": ["a", "x", "b", "c", "d", "y"],
                           "timestamp": [1, 1, 2, 3, 4, 2]})
    enc = Encoders(SPEC).fit(events, None, None)
    ex = Examples(events, enc, None, None)
    hist = ex.user_batch(np.arange(len(ex)))["recent"].numpy()
    catalog = list(enc.catalog_)
    decoded = [[catalog[i - 1] for i in row if i > 0] for row in hist]
    # sorted order: u's a, b, c, d then v's x, y
    assert decoded == [[], ["a"], ["b", "a"], ["c", "b", "a"], [], ["x"]]
