"""A channel that embeds the user with a user tower and searches an index of item-tower vectors.

The embedder is any function from encoded inputs to (B, D) vectors: the PyTorch tower while
training, the ONNX tower when a bundle is served, so both paths rank the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import cached_property

import numpy as np
import pandas as pd

from embrecall.features import Encoders
from embrecall.index import FaissIndex
from embrecall.models.channel import Candidates, UserQuery, fetch_depth, take_top

__all__ = ["EmbeddingChannel", "UserEmbedder"]

UserEmbedder = Callable[[dict[str, np.ndarray]], np.ndarray]


class EmbeddingChannel:
    def __init__(self, name: str, encoders: Encoders, users: pd.DataFrame | None, embed_users: UserEmbedder,
                 index: FaissIndex, item_vectors: Callable[[], np.ndarray]):
        """``item_vectors``: gives the (n_items, D) vectors the index holds, in catalog order; called
        once, when ``score`` first needs them (a bundle reads them from disk only then)."""
        self.name = name
        self.encoders = encoders
        self.users = users
        self.embed_users = embed_users
        self.index = index
        self._load_vectors = item_vectors
        self._item_ids = np.asarray(encoders.catalog_, dtype=object)

    def user_vectors(self, queries: Sequence[UserQuery]) -> np.ndarray:
        """(B, D) user vectors for the queries."""
        context = self.encoders.context_frame([q.context for q in queries])
        ids = pd.Index([q.user_id for q in queries], dtype=object)
        history = self.encoders.history_matrix([q.history for q in queries])
        inputs = self.encoders.encode_users(ids, self.users, context, history)
        return self.embed_users(inputs)

    @cached_property
    def item_vectors(self) -> np.ndarray:
        return self._load_vectors()

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Inner products of each user's vector with its items' vectors (-inf outside the catalog)."""
        out = []
        for user, wanted in zip(self.user_vectors(queries), items):
            pos = self.encoders.catalog_.get_indexer(list(wanted))
            scores = np.full(len(pos), -np.inf, dtype=np.float32)
            scores[pos >= 0] = self.item_vectors[pos[pos >= 0]] @ user
            out.append(scores)
        return out

    def recommend(self, queries: Sequence[UserQuery], k: int,
                  exclude: Sequence[Collection[str]] | None = None) -> list[Candidates]:
        if not queries:
            return []
        vectors = self.user_vectors(queries)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        scores, idx = self.index.search(vectors, fetch_depth(k, extra))
        out = []
        for row in range(len(queries)):
            ids = np.where(idx[row] >= 0, self._item_ids[np.maximum(idx[row], 0)], None)
            out.append(take_top(ids, scores[row], k, exclude[row] if exclude is not None else (), self.name))
        return out
