"""The in-memory form every reader produces: events plus optional user and item tables."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Dataset", "EVENT_COLUMNS"]

EVENT_COLUMNS = ("user_id", "item_id", "timestamp")


@dataclass
class Dataset:
    """An interaction log in one shape, whatever file it came from.

    ``events``: one row per interaction in the original file order, columns ``user_id`` and
    ``item_id`` (strings, raw external ids), ``timestamp`` (int64 unix seconds), then optional
    ``event``, ``weight`` and context columns.  ``users`` / ``items``: feature tables indexed by
    the raw id (``items`` may carry a ``title`` column shown next to recommendations).
    ``exposures``: rows of the "shown" event types (impressions), kept apart from the positives
    for exposure negatives.  ``notes``: what the reader noticed and the user should know (rows dropped, ids without
    features), printed by the CLI.
    """

    events: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    exposures: pd.DataFrame | None = None

    def fingerprint(self) -> str:
        """A short content hash of the events, stored in bundles to tie them to their data."""
        h = hashlib.sha256()
        for col in EVENT_COLUMNS:
            h.update(pd.util.hash_pandas_object(self.events[col], index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        e = self.events
        return (
            f"Dataset({self.source!r}: {len(e):,} events, {e['user_id'].nunique():,} users, "
            f"{e['item_id'].nunique():,} items)"
        )
