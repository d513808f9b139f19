"""What the service needs from an item index while serving, whatever holds the vectors.

``LiveIndex`` (FAISS in this process, the default) and ``MilvusIndex`` (pymilvus: an embedded
milvus-lite file or a Milvus server/cluster by URI) both satisfy it and pass one contract test
suite (``tests/index/test_index_contract.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

__all__ = ["ItemIndex", "Filters", "attribute_values", "fetch_depth", "filterable_columns"]

Filters = Mapping[str, Collection[str]]  # attribute -> accepted values (any one matches)


def fetch_depth(k: int, excluded: int, filtered: bool = False) -> int:
    """How many items to ask a list for so that ``k`` survive: everything excluded may be among
    them, and a filter may drop most of the rest (callers that still come up short ask again
    for four times as many)."""
    return (4 * k if filtered else k) + excluded


def filterable_columns(items: pd.DataFrame | None) -> list[str]:
    """Text attribute columns with few enough values to filter on (not titles)."""
    if items is None:
        return []
    cols: list[str] = []
    for c in items.columns:
        values = items[c].dropna().astype(str)
        if (
            c != "title"
            and not pd.api.types.is_numeric_dtype(items[c])
            and values.nunique() <= max(1000, len(items) // 10)
        ):
            cols.append(c)
    return cols


def attribute_values(value: object) -> list[str]:
    """An item attribute as the values a filter matches: multi-valued attributes ("Drama|War") split on '|'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [t for t in str(value).split("|") if t]


class ItemIndex(Protocol):
    @property
    def filterable(self) -> list[str]:
        """Attributes that ``filters`` may name."""

    def __len__(self) -> int: ...

    def __contains__(self, item_id: str) -> bool: ...

    def upsert(self, item_id: str, vector: np.ndarray, attributes: Mapping[str, object] | None = None) -> None:
        """Add or replace an item; it is searchable when this returns."""

    def delete(self, item_id: str) -> bool:
        """Remove an item; False if it was not there."""

    def search(
        self, query: np.ndarray, k: int, filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> tuple[list[str], np.ndarray]:
        """Top-k items for one (D,) query by inner product, best first, among those that pass
        every filter and are not excluded; k results whenever k such items exist."""

    def search_many(
        self, queries: np.ndarray, ks: Sequence[int], excludes: Sequence[Collection[str]]
    ) -> list[tuple[list[str], np.ndarray]]:
        """``search`` without filters for each of (n, D) queries, its own k and exclusions:
        what a batch of requests needs, in as few backend calls as the backend allows."""

    def vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """(n, D) vectors of ``item_ids`` as the index holds them; NaN rows for items it does not hold."""

    def select(
        self, item_ids: Sequence[str], filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> np.ndarray:
        """Positions in ``item_ids`` of the items in the index that pass the filters and are not excluded."""

    def save(self, folder: Path) -> None:
        """Write what reopening this index needs into ``folder`` (see each backend's ``load``)."""
