"""The one question every recall channel answers: top-k items for this user context, excluding these.

Evaluation, channel merging and serving only ever talk to channels through ``recommend``,
so a two-tower model, popularity, item2vec or ItemCF are interchangeable there.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from embrecall.errors import ConfigError
from embrecall.index.protocol import Filters, ItemIndex, fetch_depth

__all__ = [
    "History",
    "user_histories",
    "recent_first",
    "UserQuery",
    "Candidates",
    "Channel",
    "StoredChannel",
    "Scorer",
    "take_top",
    "Listed",
    "Timings",
]

History = tuple[str, ...]
"""A user's items, most recent last: what training examples, evaluation queries, the bundle's
user table, user events and the serving cache key all hold (``recent_first`` reads it backwards)."""


def user_histories(events: pd.DataFrame) -> dict[str, History]:
    """Every user's ``History`` in ``events`` (by timestamp, file order among equal ones)."""
    order = np.lexsort((np.arange(len(events)), events["timestamp"].to_numpy()))
    ordered = events.iloc[order]
    return {str(u): tuple(items) for u, items in ordered.groupby("user_id", sort=True)["item_id"]}


def recent_first(history: History, n: int) -> list[str]:
    """The last ``n`` items of a history, the most recent first (how every channel weighs them)."""
    return list(history[-n:])[::-1] if n > 0 else []


@dataclass(frozen=True)
class UserQuery:
    """What is known about a user at request time.

    ``history``: the user's items, most recent last (a ``History``).
    ``context``: event-level values such as ``timestamp`` (unix seconds) or ``city``.
    """

    user_id: str
    history: History = ()
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Candidates:
    """One user's recalled items, best first, with scores and the channel that found each item
    (merged results mix channels; scores are comparable only within one channel)."""

    item_ids: list[str]
    scores: np.ndarray
    channels: list[str]


Timings = dict[str, float]
"""Stage times (ms) a channel adds to, keyed by stage: what the service reports per request."""


class Channel(Protocol):
    name: str

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        """Top-``k`` items for each query, best first, never one of that query's ``exclude`` items
        and only items that pass its ``filters`` (attribute -> accepted values).

        Fewer than ``k`` come back only when fewer than ``k`` eligible items exist.  ``timings``:
        where to add the time each stage took (ms).
        """
        ...


class StoredChannel(Channel, Protocol):
    """A channel a bundle carries into the service: it writes its own files and reads them back."""

    def save(self, folder: Path) -> list[str]:
        """Write the channel into ``folder``; returns the file names written (the manifest lists them)."""
        ...

    @classmethod
    def load(cls, folder: Path, cfg: Any) -> StoredChannel:
        """Read back what ``save`` wrote; ``cfg`` is the bundle's whole ``Config``."""
        ...

    def over(self, items: ItemIndex) -> Self:
        """This channel answering from a served version's item index (see ``Listed``)."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """A channel that can score any item for a query (what AUC against sampled negatives needs)."""

    def score(self, queries: Sequence[UserQuery], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each query's scores of its items, higher ranking first; an item the channel does not know
        scores -inf."""
        ...


def take_top(item_ids: np.ndarray, scores: np.ndarray, k: int, exclude: Collection[str], channel: str) -> Candidates:
    """Keep the first ``k`` of a best-first list whose ids are not excluded (None ids are padding)."""
    keep_ids: list[str] = []
    keep_scores: list[float] = []
    for item, score in zip(item_ids, scores):
        if item is None or item in exclude:
            continue
        keep_ids.append(item)
        keep_scores.append(float(score))
        if len(keep_ids) == k:
            break
    return Candidates(keep_ids, np.asarray(keep_scores, dtype=np.float32), [channel] * len(keep_ids))


MAX_DEPTH_FACTOR = 16  # a listed channel is asked for at most this many times k before it gives up filling


class Listed:
    """The base of a channel that ranks items from its own model (popularity, ItemCF, item2vec,
    EASE): a subclass gives ``ranked``, and ``recommend`` keeps what ``items`` (the version's item
    index, once ``over`` it) holds and the filters accept, asking ``ranked`` again for four times
    as many when too few survive, up to ``MAX_DEPTH_FACTOR * k`` items.  Over no index, nothing
    is cut and a filter is refused: the channel alone knows no item attributes."""

    name: str
    items: ItemIndex | None = None

    @classmethod
    def problem(
        cls, settings: Any, counts: pd.Series, items: pd.DataFrame | None, columns: Collection[str]
    ) -> str | None:
        """Why this channel cannot be fitted with ``settings`` on a log of these item ``counts``
        (training events per item), event ``columns`` and item table ``items`` (None: it can):
        checked before anything is trained."""
        return None

    def ranked(
        self, queries: Sequence[UserQuery], depth: int, exclude: Sequence[Collection[str]] | None = None
    ) -> list[Candidates]:
        """Each query's own best-first list of ``depth`` items, the excluded ones left out."""
        raise NotImplementedError

    def over(self, items: ItemIndex) -> Self:
        """This channel answering from ``items``: its lists cut to the items held there."""
        bound = copy.copy(self)
        bound.items = items
        return bound

    def _kept(self, items: ItemIndex, found: Candidates, k: int, filters: Filters) -> Candidates:
        keep = items.select(found.item_ids, filters)[:k]
        return Candidates([found.item_ids[i] for i in keep], found.scores[keep], [self.name] * len(keep))

    def recommend(
        self,
        queries: Sequence[UserQuery],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        filters: Sequence[Filters] | None = None,
        timings: Timings | None = None,
    ) -> list[Candidates]:
        t = time.perf_counter()
        wants = [dict(f) for f in filters] if filters is not None else [{} for _ in queries]
        items = self.items
        if items is None:
            if any(wants):
                raise ConfigError(
                    f"the {self.name} channel filters through an item index; this one has none "
                    "(filters apply to a served version's channels)"
                )
            return self.ranked(queries, k, exclude)
        out: list[Candidates] = [Candidates([], np.zeros(0, np.float32), []) for _ in queries]
        for filtered in (False, True):  # one call per kind: a filter makes the first fetch deeper
            group = [i for i, f in enumerate(wants) if bool(f) == filtered]
            if not group:
                continue
            depth = fetch_depth(k, 0, filtered)
            lists = self.ranked(
                [queries[i] for i in group], depth, [exclude[i] for i in group] if exclude is not None else None
            )
            for i, found in zip(group, lists):
                kept, asked = self._kept(items, found, k, wants[i]), depth
                while len(kept.item_ids) < k and len(found.item_ids) == asked and asked < MAX_DEPTH_FACTOR * k:
                    asked *= 4  # too few survived, and more exist
                    found = self.ranked([queries[i]], asked, [exclude[i]] if exclude is not None else None)[0]
                    kept = self._kept(items, found, k, wants[i])
                out[i] = kept
        if timings is not None:
            timings[self.name] = timings.get(self.name, 0.0) + (time.perf_counter() - t) * 1000
        return out
