"""The live index under endless changes: retired slots are reclaimed (memory follows the catalog,
not the number of changes), and every answer stays what exact search over the live items gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embrecall.config import IndexConfig
from embrecall.index.live import LiveIndex

D = 8


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_churn_keeps_slots_bounded_and_answers_exact(kind):
    rng = np.random.default_rng(0)
    n = 300
    ids = [f"i{j}" for j in range(n)]
    vectors = rng.standard_normal((n, D)).astype(np.float32)
    attrs = pd.DataFrame({"category": [f"c{j % 5}" for j in range(n)]}, index=pd.Index(ids, dtype=object))
    index = LiveIndex(
        ids,
        vectors,
        attrs,
        IndexConfig(kind=kind, ef_search=400, nprobe=64),
        ["category"],
        exact_below=0,
        compact_above=64,
    )
    truth = {i: (v, f"c{j % 5}") for j, (i, v) in enumerate(zip(ids, vectors))}
    for step in range(6000):
        item = f"i{rng.integers(0, n + 50)}"  # the same items over and over, a few new ones
        if rng.random() < 0.1:
            index.delete(item)
            truth.pop(item, None)
        else:
            v = rng.standard_normal(D).astype(np.float32)
            category = f"c{rng.integers(0, 7)}"
            index.upsert(item, v, {"category": category})
            truth[item] = (v, category)
        assert index._n <= 2 * len(truth) + 64 + 1  # slots: live items plus at most as many retired ones
        if step % 1000 == 999:
            q = rng.standard_normal(D).astype(np.float32)
            live = sorted(truth, key=lambda i: -float(truth[i][0] @ q))
            found, _ = index.search(q, 10)
            assert found == live[:10] or kind != "flat"
            assert len(set(found) & set(live[:10])) >= 9
            only = [i for i in live if truth[i][1] == "c6"][:5]
            assert index.search(q, 5, {"category": ["c6"]})[0] == only
    assert len(index) == len(truth) and len(index._vectors) <= 2 * (len(truth) + 64) + 16
