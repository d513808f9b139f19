"""An event log as every fitting step reads it, whether it is in memory or sharded on disk.

A log is a sequence of parts, each holding whole users (a user's events never span parts),
sorted by user then time.  A log in memory is one part; a sharded log (``data.shards``) is one
part per shard.  Whatever sums over users (item counts, co-occurrences, Gram matrices, sessions,
histories) is summed part by part, so every channel fits a log larger than memory the same way
it fits a small one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = ["EventLog", "MemoryLog", "by_count", "data_profile"]


def data_profile(events: pd.DataFrame) -> dict[str, float]:
    """Mean daily volumes of a training log (UTC days it has events on): what the 3σ rule watches."""
    if not len(events):
        return {"days": 0.0, "events_per_day": 0.0, "users_per_day": 0.0, "items_per_day": 0.0}
    daily = events.groupby(events["timestamp"].to_numpy() // 86_400).agg(
        events=("item_id", "size"), users=("user_id", "nunique"), items=("item_id", "nunique")
    )
    return {
        "days": float(len(daily)),
        "events_per_day": float(daily["events"].mean()),
        "users_per_day": float(daily["users"].mean()),
        "items_per_day": float(daily["items"].mean()),
    }


class EventLog(Protocol):
    @property
    def part_count(self) -> int:
        """How many parts ``read`` takes."""

    def read(self, part: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One part's events (user_id, item_id, timestamp and whatever columns the log keeps; only
        ``columns`` when given), sorted by user then time."""

    def parts(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """Every part's events in turn (``columns``: only those, all a fit need hold)."""

    def rows(self, part: int) -> int:
        """How many events ``read(part)`` holds (known without reading it)."""

    def item_counts(self) -> pd.Series:
        """Events per item (item id -> count), the most first; the catalog every fit shares."""

    def user_ids(self) -> pd.Index:
        """Every user with an event in the log."""

    def summary(self) -> dict[str, Any]:
        """What a bundle's manifest says of the log it was trained on: ``events``, ``until`` (the
        newest timestamp) and ``profile`` (``data_profile``'s daily volumes)."""

    def whole(self) -> pd.DataFrame | None:
        """The whole log as one frame when it is in memory (what steps that reach across users at
        random, such as sequence windows or hard negatives, need), else None."""

    def __len__(self) -> int: ...


def by_count(counts: pd.Series) -> pd.Series:
    """Counts the most first, ties by id: every log orders its catalog so, whatever order it was
    read in (a sharded log reads users shard by shard)."""
    return counts.sort_index().sort_values(ascending=False, kind="stable")


@dataclass
class MemoryLog:
    """A log held in memory: one part, sorted when read (a copy of the columns asked for only)."""

    events: pd.DataFrame

    @property
    def part_count(self) -> int:
        return 1

    def read(self, part: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        if part != 0:
            raise IndexError(f"a log in memory has one part, not part {part}")
        ev = self.events
        times = ev["timestamp"].to_numpy() if "timestamp" in ev else np.zeros(len(ev))  # no times: by user alone
        order = np.lexsort((np.arange(len(ev)), times, ev["user_id"].to_numpy()))  # stable: file order breaks ties
        return (ev if columns is None else ev[list(columns)]).iloc[order].reset_index(drop=True)

    def parts(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        yield self.read(0, columns)

    def rows(self, part: int) -> int:
        return len(self.events)

    def user_ids(self) -> pd.Index:
        return pd.Index(pd.unique(self.events["user_id"]), dtype=object)

    def summary(self) -> dict[str, Any]:
        until = int(self.events["timestamp"].max()) if len(self.events) else 0
        return {"events": len(self.events), "until": until, "profile": data_profile(self.events)}

    def item_counts(self) -> pd.Series:
        return by_count(self.events["item_id"].value_counts(sort=False))

    def whole(self) -> pd.DataFrame:
        return self.events

    def __len__(self) -> int:
        return len(self.events)
