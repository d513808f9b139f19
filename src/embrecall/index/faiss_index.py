"""Inner-product search over item vectors with FAISS: exact (flat), HNSW or IVF.

Positions in the index are catalog ``item_idx``; vectors are L2-normalised, so inner product
is cosine similarity.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from embrecall.config import IndexConfig
from embrecall.errors import BundleError, ConfigError

__all__ = ["FaissIndex"]


class FaissIndex:
    def __init__(self, index: faiss.Index, cfg: IndexConfig):
        self.index = index
        self.cfg = cfg
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: IndexConfig) -> FaissIndex:
        """Index ``vectors`` (N, D) float32; row i is item_idx i."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        index: faiss.Index
        if cfg.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif cfg.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = cfg.ef_construction
            index = hnsw
        else:
            # About 4 * sqrt(n) lists, but FAISS wants >= 39 training points per list.
            nlist = cfg.ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            if nlist > n:
                raise ConfigError(f"index.ivf_nlist = {nlist} but only {n} items to cluster; use at most {n}")
            quantizer = faiss.IndexFlatIP(d)
            if cfg.kind == "ivf_sq8":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        index.add(x)
        return cls(index, cfg)

    def _apply_search_params(self) -> None:
        if isinstance(self.index, faiss.IndexHNSW):
            self.index.hnsw.efSearch = self.cfg.ef_search
        elif isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = self.cfg.nprobe

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, D) queries -> scores (B, k) and item_idx (B, k), best first; -1 where fewer exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise BundleError(
                f"index holds dim={self.dim} vectors but the queries have shape {q.shape}; "
                "the user tower and the index come from different models — re-run `embrecall train`"
            )
        k = min(k, len(self))
        if isinstance(self.index, faiss.IndexHNSW) and k > self.index.hnsw.efSearch:
            self.index.hnsw.efSearch = k  # HNSW cannot return more than efSearch results
        return self.index.search(q, k)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, cfg: IndexConfig) -> FaissIndex:
        if not Path(path).is_file():
            raise BundleError(f"index file {path} not found; the bundle is incomplete")
        return cls(faiss.read_index(str(path)), cfg)
