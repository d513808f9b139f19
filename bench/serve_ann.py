"""What the ANN search costs per request at each recall, over bench/serve.py's 1M-item bundle.

    python bench/serve.py  # builds the bundle once
    python bench/serve_ann.py [--bundle DIR] [--users 300]

One query at a time on one thread (as the service searches), each option's top 100 re-ranked
exactly with the full vectors (as the live index does), scored against exact search by the
share of the exact top 100 found.  Options, all on the bundle's IVF lists: full vectors at
several nprobe, 8- and 4-bit scalar codes, and 4-bit fast-scan PQ codes (fetching more to re-rank).
Prints a table of recall@100 and per-query latency.  Data: synthetic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import (  # the bundle bench/serve.py builds, its users' vectors
    _bundle,
    user_queries,
)

from embrecall.export import Bundle
from embrecall.features.profiles import UserProfiles


def _measure(
    index: faiss.Index, items: np.ndarray, queries: np.ndarray, hundredth: np.ndarray, nprobe: int, fetch: int
) -> tuple[float, float, float]:
    """Mean recall@100 and p50 / p99 ms per query (search plus exact re-rank)."""
    params = faiss.SearchParametersIVF(nprobe=nprobe)
    found, times = [], []
    for q, bar in zip(queries, hundredth):
        t = time.perf_counter()
        _, slots = index.search(q[None], fetch, params=params)
        slots = slots[0][slots[0] >= 0]
        exact = items[slots] @ q
        top = np.sort(exact)[::-1][:100]
        times.append((time.perf_counter() - t) * 1000)
        found.append(float(np.mean(top >= bar - 1e-5)))
    return float(np.mean(found)), float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--users", type=int, default=300)
    args = parser.parse_args()
    bundle = Bundle.load(_bundle(args.bundle))
    items = np.ascontiguousarray(bundle.item_vectors(), dtype=np.float32)
    profiles = UserProfiles(bundle.encoders, bundle.users)
    queries, hundredth = user_queries(bundle, profiles, items, args.users)
    faiss.omp_set_num_threads(1)
    # Every option shares the bundle's trained lists, so only how each stores the vectors differs.
    quantizer, d, ip = bundle.index().index.quantizer, items.shape[1], faiss.METRIC_INNER_PRODUCT
    nlist = quantizer.ntotal
    flat = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
    sq8 = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    sq4 = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_4bit, ip)
    pq4 = faiss.IndexIVFPQFastScan(quantizer, d, nlist, 32, 4, ip)
    pq4_fine = faiss.IndexIVFPQFastScan(quantizer, d, nlist, 64, 4, ip)  # one dimension per sub-quantizer
    for index in (flat, sq8, sq4, pq4, pq4_fine):
        index.train(items)
        index.add(items)
    options = [(f"IVF{nlist},Flat", flat, nprobe, 100) for nprobe in (16, 32, 48, 64, 96)]
    options += [(f"IVF{nlist},SQ8", sq8, nprobe, fetch) for nprobe, fetch in ((48, 100), (64, 100), (64, 200))]
    options += [(f"IVF{nlist},SQ4", sq4, 64, 200)]
    options += [(f"IVF{nlist},PQ32x4fs", pq4, 64, fetch) for fetch in (200, 400)]
    options += [(f"IVF{nlist},PQ64x4fs", pq4_fine, 64, fetch) for fetch in (400, 1000)]
    table = Table(title=f"ANN options, {len(items):,} items x {items.shape[1]}-d, {args.users} users, one thread")
    for col in ("index", "nprobe", "fetched", "recall@100", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for name, index, nprobe, fetch in options:
        recall, p50, p99 = _measure(index, items, queries, hundredth, nprobe, fetch)
        table.add_row(name, str(nprobe), str(fetch), f"{recall:.4f}", f"{p50:.3f}", f"{p99:.3f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
