"""Milvus beside FAISS at a million items, in one run: build time, recall@100 against exact
search, per-request latency of the search alone and of the whole served answer, and how long an
upserted item takes to be found.

    python bench/milvus_scale.py [--bundle DIR] [--users 300] [--milvus server|URI|FILE]

The bundle is bench/serve.py's 1M-item one (built once when none is given).  Both backends are
built from the bundle's item vectors with its index settings (IVF over 8-bit scalar codes, the
same lists and nprobe; FAISS searched through the service's live index, which re-ranks what the
codes find with the full vectors); ``--milvus`` takes a milvus-lite file path (default: a temporary
one), a Milvus server's ``http://host:19530``, or ``server``: a standalone Milvus server started for
the run from the ``milvus`` package (the test extra installs it); the same code either way.  Build
time ends when the server reports every row indexed.  Upsert: a new item whose vector is a user's
query, timed from the upsert call until a search finds it (20 items).  Searches run one
query at a time on one thread, as the service searches.  End to end: ``ServingVersion``'s answer
for one user (profile, user tower, search without the user's seen items, channel merge), the
path every recall request takes.  Recall@100: the share of the exact top 100 found (judged by
score, so ties at the 100th place cannot count against it).  Data: synthetic.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from milvus_server import local_milvus
from serve import (  # the bundle bench/serve.py builds, its users' vectors
    _bundle,
    user_queries,
)

from embrecall.export import Bundle
from embrecall.features.profiles import UserProfiles
from embrecall.index import FaissIndex
from embrecall.index.milvus_index import MilvusIndex
from embrecall.index.protocol import filterable_columns
from embrecall.models.channel import UserQuery
from embrecall.serve.cache import VectorCache
from embrecall.serve.service import ServedChannel, ServingVersion


def _searches(
    search, queries: np.ndarray, hundredth: np.ndarray, ids: np.ndarray, vectors: np.ndarray
) -> tuple[float, list[float]]:
    """Recall@100 and per-query ms of ``search(q) -> (ids, scores)``."""
    found, times = [], []
    position = {item: i for i, item in enumerate(ids)}
    for q, bar in zip(queries, hundredth):
        started = time.perf_counter()
        got, _ = search(q)
        times.append((time.perf_counter() - started) * 1000)
        rows = np.fromiter((position[i] for i in got), dtype=np.int64)
        found.append(float(np.sum(q @ vectors[rows].T >= bar - 1e-6)) / 100)
    return float(np.mean(found)), times


def _answers(version: ServingVersion, users: list[str]) -> list[float]:
    """Per-request ms of the served answer (every channel of the version, merged)."""
    served = ServedChannel(version, version.quotas, "served")
    times = []
    for user in users:
        history = version.history(user, events=())
        query = UserQuery(user, history, {"timestamp": int(time.time())})
        started = time.perf_counter()
        served.recommend([query], 100, [set(history)])
        times.append((time.perf_counter() - started) * 1000)
    return times


def _upserts(index, queries: np.ndarray, n: int = 20) -> list[float]:
    """Per-item ms from an upsert call until a search finds the item (its vector: a user's query)."""
    times = []
    for i, q in enumerate(queries[:n]):
        item = f"bench-upsert-{i}"
        started = time.perf_counter()
        index.upsert(item, q)
        while item not in index.search(q, 10)[0]:
            pass
        times.append((time.perf_counter() - started) * 1000)
    return times


def _wait_indexed(index: MilvusIndex, rows: int, timeout_s: float = 3600) -> None:
    """Until the server reports every row in the vector index (a flushed segment is indexed after)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (name,) = index.client.list_indexes(index.collection)
        if int(index.client.describe_index(index.collection, name).get("indexed_rows", rows)) >= rows:
            return
        time.sleep(1)
    raise TimeoutError(f"the Milvus index held fewer than {rows:,} rows after {timeout_s:.0f} s")


@contextmanager
def _milvus_uri(given: str | None, tmp: Path) -> Iterator[str]:
    """The URI to build in: a milvus-lite file, a server's URI, or a local server started now."""
    if given != "server":
        yield given or str(tmp / "milvus.db")
        return
    with local_milvus(tmp / "milvus-server", 19530) as uri:
        yield uri


def _ms(times: list[float]) -> str:
    return f"{np.percentile(times, 50):.2f} / {np.percentile(times, 99):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument(
        "--milvus",
        default=None,
        help="a milvus-lite file (default: a temporary one), a server URI, or 'server' (one started now)",
    )
    args = parser.parse_args()
    bundle = Bundle.load(_bundle(args.bundle))
    vectors = np.ascontiguousarray(bundle.item_vectors(), dtype=np.float32)
    ids = np.asarray(bundle.encoders.catalog_, dtype=object)
    cfg = bundle.config.index
    profiles = UserProfiles(bundle.encoders, bundle.users)
    queries, hundredth = user_queries(bundle, profiles, vectors, args.users)
    users = [str(u) for u in bundle.users.index[: args.users]]
    kind = (
        cfg.kind
        if cfg.kind in ("flat", "hnsw")
        else f"{cfg.kind} ({cfg.ivf_nlist or 'auto'} lists, nprobe {cfg.nprobe})"
    )
    table = Table(title=f"{len(ids):,} items, {vectors.shape[1]}-d, {kind}, {args.users} users, one query at a time")
    columns = ("backend", "build s", "recall@100", "search p50 / p99 ms", "served answer p50 / p99 ms", "upsert found")
    for col in columns:
        table.add_column(col, justify="right")

    started = time.perf_counter()
    FaissIndex.build(vectors, cfg)  # what building costs; the served version loads the bundle's copy
    built = time.perf_counter() - started
    served = ServingVersion(bundle, VectorCache(size=0))
    recall, times = _searches(lambda q: served.index.search(q, 100), queries, hundredth, ids, vectors)
    table.add_row(
        f"FAISS {cfg.kind}, re-ranked",
        f"{built:.0f}",
        f"{recall:.3f}",
        _ms(times),
        _ms(_answers(served, users)),
        _ms(_upserts(served.index, queries)),
    )

    with tempfile.TemporaryDirectory() as tmp, _milvus_uri(args.milvus, Path(tmp)) as uri:
        started = time.perf_counter()
        collection = "embrecall_" + re.sub(r"\W", "_", bundle.version)  # the one the served version opens
        milvus = MilvusIndex.build(
            uri, collection, list(ids), vectors, bundle.items, filterable_columns(bundle.items), cfg=cfg, batch=20_000
        )
        _wait_indexed(milvus, len(ids))
        built = time.perf_counter() - started
        recall, times = _searches(lambda q: milvus.search(q, 100), queries, hundredth, ids, vectors)
        answer = _answers(ServingVersion(bundle, VectorCache(size=0), milvus_uri=uri), users)
        table.add_row(
            f"Milvus {cfg.kind} ({'milvus-lite' if '://' not in uri else uri})",
            f"{built:.0f}",
            f"{recall:.3f}",
            _ms(times),
            _ms(answer),
            _ms(_upserts(milvus, queries)),
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
