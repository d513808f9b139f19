"""Entity recall (u2c): categories, brands or any item attribute ranked for a user by the same towers.

The two-tower model is trained as a softmax over items, so ``exp(user . item / temperature)`` is
proportional to the chance of the item given the user; summed over the items of a value it is
the chance of that value (the item side aggregated by entity), with no second model (DeWu's
dimension-specific recalls; 58.com picks the categories to search with it).  A value with many
likely items outranks one with a single close item, which a mean of item vectors does not see.
A multi-valued attribute (``Action|Comedy``) puts an item in each of its values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import sparse

from embrecall.errors import DataError
from embrecall.models.channel import Candidates, UserQuery, recent_first

__all__ = ["Entities", "EntityRanker", "EntityRecall", "HistoryEntities", "entity_values"]

SCORES_AT_ONCE = 1 << 24  # user x item scores held at once (64 MB of float32): bounds a batch's memory


def entity_values(items: pd.DataFrame | None, column: str, item_ids: Sequence[str], sep: str = "|") -> pd.Series:
    """Each item's entity values, one row per (item, value): index item id, values the entity
    (missing and empty values left out)."""
    if items is None or column not in items.columns:
        have = [] if items is None else [c for c in items.columns if c != "title"]
        raise DataError(f"no item attribute '{column}' to recall; the item table has {have}", column=column)
    raw = items[column].reindex(pd.Index(item_ids, dtype=object)).dropna().astype(str)
    values = raw.str.split(sep, regex=False).explode().str.strip()
    return values[values != ""]


class EntityRanker(Protocol):
    """What ranks an attribute's values for users (entity recall, u2c): ``Candidates`` whose ids
    are values (categories), not items."""

    name: str

    def recommend(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]: ...


class Entities:
    """The values of one attribute and which catalog items carry each (a sparse (values, items) 0/1 matrix)."""

    def __init__(self, column: str, values: np.ndarray, members: sparse.csr_matrix):
        self.column, self.values, self.members = column, values, members

    @classmethod
    def of(cls, column: str, items: pd.DataFrame | None, item_ids: Sequence[str]) -> Entities:
        values = entity_values(items, column, item_ids)
        if values.empty:
            raise DataError(f"item attribute '{column}' has no value for any catalog item", column=column)
        position = pd.Index(item_ids, dtype=object).get_indexer(values.index)
        codes, names = pd.factorize(values.to_numpy())
        members = sparse.csr_matrix(
            (np.ones(len(codes), dtype=np.float32), (codes, position)), shape=(len(names), len(item_ids))
        )
        return cls(column, np.asarray(names, dtype=object), members)


class EntityRecall:
    """A channel over entities: each query's top-k values of the attribute by the log of their
    items' summed ``exp(score / temperature)``.  ``exclude`` is ignored: a user's own categories
    are what u2c should find."""

    def __init__(
        self,
        entities: Entities,
        embed: Callable[[Sequence[UserQuery]], np.ndarray],
        item_vectors: np.ndarray,
        temperature: float,
        name: str = "two_tower",
    ):
        self.entities, self.embed, self.item_vectors, self.temperature = entities, embed, item_vectors, temperature
        self.name = name

    def recommend(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        if not queries:
            return []
        users = self.embed(queries)
        per = max(1, SCORES_AT_ONCE // max(len(self.item_vectors), 1))  # (users, items) scores held at a time
        scores = np.concatenate([self._scores(users[s : s + per]) for s in range(0, len(users), per)])
        k = min(k, scores.shape[1])
        out = []
        for row in scores:
            best = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            best = best[np.argsort(-row[best], kind="stable")]
            out.append(Candidates(self.entities.values[best].tolist(), row[best], [self.name] * k))
        return out

    def _scores(self, users: np.ndarray) -> np.ndarray:
        """(B, values) log of each value's summed exp(score / temperature) over its items."""
        logits = users @ self.item_vectors.T / self.temperature  # (B, items), or (B, K, items)
        logits = logits if logits.ndim == 2 else logits.max(axis=1)  # an item's best interest
        top = logits.max(axis=1, keepdims=True)
        mass = self.entities.members @ np.exp(logits - top).T  # (values, B)
        return (np.log(np.maximum(mass, 1e-30)) + top.T).T.astype(np.float32)


class HistoryEntities:
    """The baseline entity recall has to beat: the values of the user's own recent items, weighted
    ``decay**p`` by how far back (p = 0: the latest), then the most clicked values overall
    (``history = 0``: those alone, popularity)."""

    def __init__(
        self, items: pd.DataFrame | None, attribute: str, events: pd.DataFrame, history: int = 50, decay: float = 0.9
    ):
        clicked = events["item_id"].value_counts()
        values = entity_values(items, attribute, [] if items is None else items.index.tolist())
        self.values_of = values.groupby(level=0).agg(list).to_dict()
        self.popular = (
            pd.Series(clicked.reindex(values.index).fillna(0).to_numpy(), index=values.to_numpy())
            .groupby(level=0)
            .sum()
            .sort_values(ascending=False, kind="stable")
        )
        self.popular = self.popular[self.popular > 0]
        self.history, self.decay = history, decay
        self.name = "history" if history else "popular"

    def recommend(
        self, queries: Sequence[UserQuery], k: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        out = []
        for q in queries:
            score: dict[str, float] = {}
            for p, item in enumerate(recent_first(q.history, self.history)):
                for value in self.values_of.get(item, ()):
                    score[value] = score.get(value, 0.0) + self.decay**p
            ranked = sorted(score, key=lambda v: -score[v])[:k]
            for value in self.popular.index[: k + len(ranked)]:
                if len(ranked) == k:
                    break
                if value not in score:
                    ranked.append(value)
            scores = np.asarray([score.get(v, 0.0) for v in ranked], dtype=np.float32)
            out.append(Candidates(ranked, scores, [self.name] * len(ranked)))
        return out
