"""One contract for every serving index backend: FAISS in process (LiveIndex) and Milvus
(pymilvus against an embedded milvus-lite database, and against a Milvus server)."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from embrecall.config import IndexConfig
from embrecall.index.live import LiveIndex

N, D = 400, 16
FILTERABLE = ["category", "genres"]


def _milvus(uri, ids, vectors, attributes, cfg):
    from embrecall.index.milvus_index import MilvusIndex

    collection = f"items_{uuid.uuid4().hex}"  # a server is shared by every test of the session
    return MilvusIndex.build(uri, collection, ids, vectors, attributes, FILTERABLE, cfg)


def _faiss(ids, vectors, attributes, cfg):
    return LiveIndex(ids, vectors, attributes, cfg, FILTERABLE, exact_below=0)  # the ANN path, even this small


def _reopen(index, tmp_path):
    index.save(tmp_path / "saved")
    if isinstance(index, LiveIndex):
        return LiveIndex.load(tmp_path / "saved")
    from embrecall.index.milvus_index import MilvusIndex

    return MilvusIndex.load(tmp_path / "saved")


BACKENDS = [
    ("faiss", "hnsw"),
    ("faiss", "flat"),
    ("faiss", "ivf_sq8"),
    ("milvus", "hnsw"),
    ("milvus", "flat"),
]
# A server case costs seconds (a collection made and flushed, a segment sealed): the server runs
# the cases of search, changes and save/load; milvus-lite runs every case through the same code.
ON_SERVER = {
    "test_search_matches_exact_search_with_filters_and_exclusions",
    "test_upserts_and_deletes_are_searchable_at_once",
    "test_save_and_load_keep_every_change",
}


def pytest_generate_tests(metafunc):
    if "catalog" in metafunc.fixturenames:
        server = [("milvus-server", "hnsw")] if metafunc.function.__name__ in ON_SERVER else []
        metafunc.parametrize("catalog", BACKENDS + server, indirect=True, ids=lambda p: f"{p[0]}-{p[1]}")


@pytest.fixture
def catalog(request, tmp_path):
    backend, kind = request.param
    uri = None
    if backend == "milvus":
        pytest.importorskip("milvus_lite", reason="the Milvus backend tests need pip install 'embrecall[milvus]'")
        uri = str(tmp_path / "milvus.db")
    elif backend == "milvus-server":
        uri = request.getfixturevalue("milvus_server")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, D)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{i}" for i in range(N)]
    attributes = pd.DataFrame(
        {
            "category": [f"c{i % 4}" for i in range(N)],
            "genres": ["Drama|War" if i % 50 == 0 else "Comedy" for i in range(N)],
        },
        index=pd.Index(ids, dtype=object),
    )
    cfg = IndexConfig(kind=kind, ef_search=400, nprobe=16)
    index = _faiss(ids, vectors, attributes, cfg) if uri is None else _milvus(uri, ids, vectors, attributes, cfg)
    return index, ids, vectors, attributes


def _exact(vectors, ids, q, k, keep=None):
    scores = vectors @ q
    order = [i for i in np.argsort(-scores) if keep is None or keep[i]]
    return [ids[i] for i in order[:k]]


def test_search_matches_exact_search_with_filters_and_exclusions(catalog):
    index, ids, vectors, attributes = catalog
    assert len(index) == N and "item-3" in index and "nope" not in index
    assert sorted(index.filterable) == sorted(FILTERABLE)
    q = vectors[7]
    found, scores = index.search(q, 10)
    assert found == _exact(vectors, ids, q, 10)
    np.testing.assert_allclose(scores, vectors[[ids.index(i) for i in found]] @ q, atol=1e-4)
    assert list(scores) == sorted(scores, reverse=True)
    excluded = set(found[:3])
    keep = np.array([i not in excluded for i in ids])
    assert index.search(q, 10, exclude=excluded)[0] == _exact(vectors, ids, q, 10, keep)
    keep = np.array([(c in ("c1", "c2")) and i not in excluded for i, c in zip(ids, attributes["category"])])
    found, _ = index.search(q, 20, {"category": ["c1", "c2"]}, excluded)
    assert found == _exact(vectors, ids, q, 20, keep)


def test_search_many_answers_each_query_as_search_does(catalog):
    index, ids, vectors, _ = catalog
    index.delete("item-40")  # a retired slot that every query in the batch must skip
    queries = vectors[[40, 41, 42, 43]]
    ks = [10, 5, 30, 1]
    excludes = [set(), {"item-41", "item-3"}, set(ids[: N - 20]), {"item-43"}]  # the third leaves 20 of k=30
    got = index.search_many(queries, ks, excludes)
    assert [found for found, _ in got] == [index.search(q, k, exclude=ex)[0] for q, k, ex in zip(queries, ks, excludes)]
    for (found, scores), q, k, ex in zip(got, queries, ks, excludes):
        keep = np.array([i not in ex and i != "item-40" for i in ids])
        assert found == _exact(vectors, ids, q, k, keep)
        np.testing.assert_allclose(scores, vectors[[ids.index(i) for i in found]] @ q, atol=1e-4)
    assert len(got[2][0]) == 20


def test_k_results_whenever_k_items_are_eligible(catalog):
    index, ids, vectors, _ = catalog
    war = [i for n, i in enumerate(ids) if n % 50 == 0]  # 8 items, matched inside a multi-valued attribute
    found, _ = index.search(vectors[1], 8, {"genres": ["War"]})
    assert sorted(found) == sorted(war)
    found, _ = index.search(vectors[1], 50, {"genres": ["War"]}, exclude={war[0]})
    assert sorted(found) == sorted(war[1:])
    assert index.search(vectors[1], 5, {"genres": ["Western"]})[0] == []


def test_upserts_and_deletes_are_searchable_at_once(catalog):
    index, ids, vectors, _ = catalog
    q = (vectors[11] + vectors[12]) / np.linalg.norm(vectors[11] + vectors[12])  # no catalog item scores 1
    index.upsert("fresh", q, {"category": "new-cat", "genres": "Drama"})
    assert index.search(q, 1)[0] == ["fresh"] and len(index) == N + 1
    assert index.search(q, 5, {"category": ["new-cat"]})[0] == ["fresh"]
    index.upsert("fresh", -q, {"category": "c0"})  # replaced: vector and attributes
    assert "fresh" not in index.search(q, 20)[0] and index.search(q, 5, {"category": ["new-cat"]})[0] == []
    assert index.delete("item-11") and not index.delete("item-11") and not index.delete("never-there")
    assert "item-11" not in index and "item-11" not in index.search(vectors[11], 50)[0]
    assert len(index) == N


def test_select_keeps_order_and_drops_ineligible(catalog):
    index, *_ = catalog
    asked = np.array(["item-5", "nope", "item-1", "item-2", "item-9", "item-6"], dtype=object)
    assert index.select(asked).tolist() == [0, 2, 3, 4, 5]
    assert index.select(asked, {"category": ["c1", "c2"]}, exclude={"item-9"}).tolist() == [0, 2, 3, 5]
    index.delete("item-5")
    assert index.select(asked, {"category": ["c1"]}).tolist() == [2, 4]


def test_save_and_load_keep_every_change(catalog, tmp_path):
    index, ids, vectors, _ = catalog
    index.upsert("fresh", vectors[3], {"category": "new-cat", "genres": "War|Crime"})
    index.upsert("item-4", -vectors[4], {"category": "c9"})
    index.delete("item-6")
    again = _reopen(index, tmp_path)
    assert len(again) == N and "item-6" not in again
    assert again.search(vectors[3], 5, {"genres": ["Crime"]})[0] == ["fresh"]
    assert again.search(vectors[4], 3, {"category": ["c9"]})[0] == ["item-4"]
    assert again.search(vectors[8], 10)[0] == index.search(vectors[8], 10)[0]


def test_vectors_of_items_held_and_not_held(catalog):
    index, ids, vectors, _ = catalog
    got = index.vectors([ids[3], "nobody", ids[0]])
    np.testing.assert_allclose(got[[0, 2]], vectors[[3, 0]], rtol=1e-6)
    assert np.isnan(got[1]).all()
    moved = np.roll(vectors[5], 1)
    index.upsert(ids[5], moved, {"category": "c1"})  # what the index holds now
    np.testing.assert_allclose(index.vectors([ids[5]])[0], moved, rtol=1e-6)
    assert index.vectors([]).shape == (0, D)
