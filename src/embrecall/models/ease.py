"""The EASE channel (Steck, 2019): a closed-form item-item linear model, scored from a
recency-weighted recent profile.

``B = argmin ||X - XB||^2 + l2 ||B||^2`` with ``diag(B) = 0`` over the binary user x item matrix X
of training events has the solution ``B = I - P / diag(P)``, ``P = (X'X + l2 I)^-1``.  A user's
scores are ``x_u B`` where ``x_u`` weights the item ``p`` steps back by ``decay**p`` over the last
``history`` items, so recent interests count most.  B is a dense item x item matrix: catalogs
beyond ``max_items`` are refused rather than run out of memory.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from scipy.linalg import get_lapack_funcs

from embrecall.config import Config, EaseConfig
from embrecall.data.log import EventLog
from embrecall.errors import ConfigError, NotFittedError
from embrecall.index.protocol import fetch_depth
from embrecall.models.channel import Candidates, Listed, UserQuery, recent_first, take_top

__all__ = ["Ease", "ease_weights"]


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """The EASE item-item matrix from the Gram matrix X'X (n, n), zero diagonal; ``gram`` is
    overwritten.  The inverse goes through a Cholesky factorisation (the matrix is symmetric
    positive definite), in place: a third of an LU inverse's work and no second n x n copy."""
    gram[np.diag_indices_from(gram)] += l2
    potrf, potri = get_lapack_funcs(("potrf", "potri"), (gram,))
    factor, info = potrf(gram, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        p, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ConfigError(
            f"EASE: the regularised Gram matrix is not positive definite (LAPACK info {info}); raise channels.ease.l2"
        )
    for start in range(0, len(p), 1024):  # potri fills the upper triangle: mirror it, a block at a time
        end = start + 1024
        p[start:end, :start] = p[:start, start:end].T
        block = p[start:end, start:end]
        p[start:end, start:end] = np.triu(block) + np.triu(block, 1).T
    p /= -np.diag(p)[None, :]
    np.fill_diagonal(p, 0.0)
    return p


class Ease(Listed):
    name = "ease"

    def __init__(self, cfg: EaseConfig | None = None):
        self.cfg = cfg or EaseConfig()
        self.item_ids_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None

    @classmethod
    def problem(
        cls, settings: EaseConfig, counts: pd.Series, items: pd.DataFrame | None, columns: Collection[str]
    ) -> str | None:
        n = int((counts >= settings.min_count).sum())
        if n <= settings.max_items:
            return None
        gib = n * n * 4 * 2 / 2**30
        return (
            f"the ease channel holds a dense item x item matrix: {n:,} items with at least "
            f"{settings.min_count} events need about {gib:.1f} GiB (over channels.ease.max_items = "
            f"{settings.max_items:,}); raise channels.ease.min_count (items with fewer events are left "
            "out) or channels.ease.max_items if the memory is there, or use itemcf"
        )

    def fit(self, log: EventLog, items: pd.DataFrame | None = None) -> Ease:
        """The Gram matrix X^T X summed part by part (a part holds whole users), then EASE's closed form."""
        counts = log.item_counts()
        why = self.problem(self.cfg, counts, items, ())
        if why:
            raise ConfigError(why)
        catalog = counts.index[counts.to_numpy() >= self.cfg.min_count]
        n = len(catalog)
        dtype = np.float64 if n <= 10_000 else np.float32  # float32 halves the memory of large catalogs
        gram = np.zeros((n, n), dtype=dtype)
        for events in log.parts(["user_id", "item_id"]):
            columns = catalog.get_indexer(events["item_id"])
            kept = columns >= 0  # items under min_count are left out
            users = pd.factorize(events["user_id"].to_numpy()[kept])[0]
            x = sp.csr_matrix(
                (np.ones(len(users), dtype=np.float32), (users, columns[kept])),
                shape=(users.max() + 1 if len(users) else 0, n),
            )
            x.data[:] = 1.0  # repeated events count once: X is binary
            gram += (x.T @ x).toarray()
        self._set(np.asarray(catalog, dtype=object), ease_weights(gram, self.cfg.l2).astype(np.float32, copy=False))
        return self

    def _set(self, item_ids: np.ndarray, weights: np.ndarray) -> None:
        self.item_ids_, self.weights_ = item_ids, weights
        self._position = {item: i for i, item in enumerate(item_ids)}

    def save(self, folder: Path) -> list[str]:
        """The item x item weights (safetensors) and the item ids (Parquet)."""
        if self.weights_ is None:
            raise NotFittedError("Ease is not fitted yet. Call 'fit' with training events first.")
        save_numpy({"weights": np.ascontiguousarray(self.weights_)}, str(folder / "ease.safetensors"))
        pd.DataFrame({"item_id": self.item_ids_}).to_parquet(folder / "ease_items.parquet", index=False)
        return ["ease.safetensors", "ease_items.parquet"]

    @classmethod
    def load(cls, folder: Path, cfg: Config) -> Ease:
        model = cls(cfg.channels.ease)
        item_ids = pd.read_parquet(folder / "ease_items.parquet")["item_id"].astype(str).to_numpy(dtype=object)
        model._set(item_ids, load_numpy(str(folder / "ease.safetensors"))["weights"])
        return model

    def profiles(self, queries: Sequence[UserQuery]) -> sp.csr_matrix:
        """(Q, n) recency-weighted profiles: the item p steps back weighs ``decay**p``."""
        rows, cols, vals = [], [], []
        for r, q in enumerate(queries):
            for p, item in enumerate(recent_first(q.history, self.cfg.history)):
                pos = self._position.get(item, -1)
                if pos >= 0:
                    rows.append(r)
                    cols.append(pos)
                    vals.append(self.cfg.decay**p)
        return sp.csr_matrix(
            (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(queries), len(self._position))
        )

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """EASE's score of each item for each profile (-inf for an item it never saw)."""
        if self.weights_ is None:
            raise NotFittedError("Ease is not fitted yet. Call 'fit' with training events first.")
        out = []
        for row, wanted in zip(np.asarray(self.profiles(queries) @ self.weights_), items):
            pos = np.fromiter((self._position.get(i, -1) for i in wanted), dtype=np.int64, count=len(wanted))
            out.append(np.where(pos >= 0, row[np.maximum(pos, 0)], -np.inf).astype(np.float32))
        return out

    def ranked(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        if self.weights_ is None or self.item_ids_ is None:
            raise NotFittedError("Ease is not fitted yet. Call 'fit' with training events first.")
        if not queries:
            return []
        scores = np.asarray(self.profiles(queries) @ self.weights_)  # (Q, n)
        out = []
        for r, row in enumerate(scores):
            ex = exclude[r] if exclude is not None else ()
            depth = min(len(row), fetch_depth(k, len(ex)))
            top = np.argpartition(-row, depth - 1)[:depth]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append(take_top(self.item_ids_[top], row[top], k, ex, self.name))
        return out
