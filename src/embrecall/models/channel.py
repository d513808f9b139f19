"""The one question every recall channel answers: top-k items for this user context, excluding these.

Evaluation, channel merging and serving only ever talk to channels through ``recommend``,
so a two-tower model, popularity, item2vec or ItemCF are interchangeable there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["UserQuery", "Candidates", "Channel", "take_top"]


@dataclass(frozen=True)
class UserQuery:
    """What is known about a user at request time.

    ``history``: raw item ids the user interacted with, oldest first.
    ``context``: event-level values such as ``timestamp`` (unix seconds) or ``city``.
    """

    user_id: str
    history: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Candidates:
    """One user's recalled items, best first, with scores and the channel that found each item
    (merged results mix channels; scores are comparable only within one channel)."""

    item_ids: list[str]
    scores: np.ndarray
    channels: list[str]


class Channel(Protocol):
    name: str

    def recommend(self, queries: Sequence[UserQuery], k: int,
                  exclude: Sequence[Collection[str]] | None = None) -> list[Candidates]:
        """Top-``k`` items for each query, best first, never one of that query's ``exclude`` items.

        Fewer than ``k`` come back only when fewer than ``k`` eligible items exist.
        """
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
