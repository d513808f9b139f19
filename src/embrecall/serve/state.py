"""What the service holds between requests: the active version, and every item change it has
accepted (with where it came from), so that a newly activated version starts with them too.

A swap loads the new version beside the old one, replays the item changes onto it, and then
replaces one reference: requests that started on the old version finish on it, later ones see
the new one; item changes wait for the swap (one lock), so none lands on the old version only.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

from embrecall.export.registry import Registry
from embrecall.index.milvus_index import MilvusIndex
from embrecall.serve.cache import VectorCache
from embrecall.serve.events import Histories
from embrecall.serve.service import ServingVersion

__all__ = ["ServiceState", "Accepted", "Attributes"]

Attributes = Mapping[str, object] | None  # an item's attributes, None once it is deleted


class Accepted(NamedTuple):
    """An item's latest accepted change: its attributes (None: deleted) and where the change came
    from: a request to this replica, or the change feed every replica follows."""

    attributes: Attributes
    origin: Literal["request", "feed"]


def _settle() -> None:
    """Collect once, then exempt what survives (the loaded version) from the cyclic collector:
    with a 1M-item bundle loaded every full collection scanned it, a ~130 ms pause and the p99."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServiceState:
    def __init__(
        self,
        source: Path | str,
        cache: VectorCache | None = None,
        milvus_uri: str | None = None,
        histories: Histories | None = None,
        alias: str | None = None,
    ):
        """``source``: a bundle folder, or a registry folder whose ``ACTIVE`` version is served and followed;
        ``cache``: the user-vector cache, shared across versions (keys carry the version);
        ``histories``: users' events since training, shared across versions;
        ``milvus_uri``: keep item vectors in Milvus rather than in process (see ``ServingVersion``);
        ``alias``: a Milvus alias moved onto each version's collection as it starts being served."""
        self.source = Path(source)
        self.cache = cache or VectorCache()
        self.milvus_uri, self.alias = milvus_uri, alias
        self.histories = histories
        self.registry = Registry(self.source) if (self.source / "ACTIVE").is_file() else None
        self.changes: dict[str, Accepted] = {}  # every item's latest accepted change
        self._lock = threading.Lock()
        self._failed: str | None = None  # a version that would not load: not retried until ACTIVE moves on
        self.current = self._load(self._wanted())
        self._hold_alias()
        self.swaps = 0
        _settle()

    def _load(self, folder: Path) -> ServingVersion:
        return ServingVersion(folder, self.cache, milvus_uri=self.milvus_uri, histories=self.histories)

    def _hold_alias(self) -> None:
        if self.alias and isinstance(self.current.index, MilvusIndex):
            self.current.index.hold_alias(self.alias)

    def _active_name(self) -> str:
        name = self.registry.state()["active"]  # type: ignore[union-attr]
        if name is None:
            raise FileNotFoundError(f"{self.source}/ACTIVE names no version; run `embrecall publish`")
        return name

    def _wanted(self) -> Path:
        return self.source if self.registry is None else self.registry.folder(self._active_name())

    def apply(
        self, changes: Mapping[str, Attributes], origin: Literal["request", "feed"] = "request"
    ) -> ServingVersion:
        """Apply item changes (item_id -> attributes, or None to delete), upserts embedded in one run,
        and keep them for the versions that come later."""
        with self._lock:
            self._apply(self.current, changes)
            self.changes.update({i: Accepted(None if a is None else dict(a), origin) for i, a in changes.items()})
            return self.current

    def from_feed(self) -> dict[str, Attributes]:
        """The changes the feed brought (what its snapshot holds), by item."""
        with self._lock:
            return {item: c.attributes for item, c in self.changes.items() if c.origin == "feed"}

    @staticmethod
    def _apply(version: ServingVersion, changes: Mapping[str, Attributes]) -> None:
        version.upsert_items({i: a for i, a in changes.items() if a is not None})
        for item_id in (i for i, a in changes.items() if a is None):
            version.index.delete(item_id)

    def upsert(self, item_id: str, attributes: Mapping[str, object]) -> ServingVersion:
        return self.apply({item_id: attributes})

    def delete(self, item_id: str) -> bool:
        with self._lock:
            found = self.current.index.delete(item_id)
            if found:
                self.changes[item_id] = Accepted(None, "request")
            return found

    def refresh(self) -> bool:
        """Swap to the registry's active version if it changed; True when a swap happened.  Called
        every second: only ACTIVE is read until it names another version."""
        name = self._active_name()
        if name in (self.current.version, self._failed):
            return False
        try:  # loaded outside the lock: serving goes on meanwhile
            fresh = self._load(self.registry.folder(name))  # type: ignore[union-attr]
        except Exception:
            self._failed = name
            raise
        with self._lock:
            self._apply(fresh, {item: c.attributes for item, c in self.changes.items()})
            self.current = fresh
            self.swaps += 1
        self._hold_alias()
        _settle()
        return True
