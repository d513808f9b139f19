"""The FAISS index: ANN kinds agree with exact search, save/load round trips, wrong dims refused."""

from __future__ import annotations

import numpy as np
import pytest

from embrecall.config import IndexConfig
from embrecall.errors import BundleError, ConfigError
from embrecall.index import FaissIndex


def _unit(rng, n, d=32, clusters=0):
    """Unit vectors; with ``clusters``, grouped around that many centres as trained embeddings are."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    if clusters:
        x = 0.5 * x + 3.0 * rng.standard_normal((clusters, d)).astype(np.float32)[rng.integers(0, clusters, n)]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind, floor", [("flat", 1.0), ("hnsw", 0.95), ("ivf", 0.9), ("ivf_sq8", 0.85)])
def test_recall_against_exact_search(kind, floor):
    rng = np.random.default_rng(0)
    points = _unit(rng, 5050, clusters=40)  # queries from the same clusters as the items
    items, queries = points[:5000], points[5000:]
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :50]
    _, found = FaissIndex.build(items, IndexConfig(kind=kind, nprobe=32)).search(queries, 50)
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(exact, found)])
    assert recall >= floor


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    items, queries = _unit(rng, 300), _unit(rng, 5)
    index = FaissIndex.build(items, IndexConfig(kind="hnsw"))
    index.save(tmp_path / "i.faiss")
    again = FaissIndex.load(tmp_path / "i.faiss", IndexConfig(kind="hnsw"))
    np.testing.assert_array_equal(index.search(queries, 10)[1], again.search(queries, 10)[1])


def test_wrong_dimension_is_refused_with_both_dims():
    index = FaissIndex.build(_unit(np.random.default_rng(2), 100, 64), IndexConfig())
    with pytest.raises(BundleError, match=r"dim=64 .* shape \(1, 32\)"):
        index.search(np.zeros((1, 32), np.float32), 5)


def test_ivf_with_too_many_lists_is_a_config_error():
    with pytest.raises(ConfigError, match="index.ivf_nlist = 50 but only 10 items"):
        FaissIndex.build(_unit(np.random.default_rng(3), 10), IndexConfig(kind="ivf", ivf_nlist=50))
