"""Item changes from a Redis Stream, applied to the live index in near real time.

Producers ``XADD`` entries ``{op: upsert|delete, item_id, attributes: <JSON object>}`` (see
``send_item_change``).  The consumer reads them in a consumer group and acknowledges an entry
only after the index holds the change.  On start it first re-applies the stream's history (so
changes acknowledged before a restart, and not in the bundle, are not lost), then its own
pending entries (delivered before a crash, never acknowledged), then new ones.  A malformed
entry is acknowledged and copied to ``<stream>:dead`` so it cannot block the feed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping

from embrecall.serve.state import ServiceState

__all__ = ["ChangeFeed", "send_item_change"]

log = logging.getLogger("embrecall.serve.feed")


def send_item_change(client, stream: str, op: str, item_id: str,
                     attributes: Mapping[str, object] | None = None) -> str:
    """Append one change to the stream; returns its entry id."""
    fields = {"op": op, "item_id": item_id, "attributes": json.dumps(dict(attributes or {}))}
    entry = client.xadd(stream, fields)
    return entry.decode() if isinstance(entry, bytes) else entry


class ChangeFeed:
    def __init__(self, state: ServiceState, url: str, stream: str = "embrecall:items", group: str | None = None,
                 consumer: str = "embrecall-1"):
        """``consumer``: this replica's name, kept across its restarts; ``group`` defaults to it, because
        every replica must apply every change (replicas sharing a group would split the changes)."""
        import redis

        self.state, self.stream, self.group, self.consumer = state, stream, group or consumer, consumer
        self.client = redis.Redis.from_url(url)
        self.applied = self.dead = 0
        self.lag_ms = 0.0  # age of the newest applied entry when it was applied
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors = (redis.RedisError, OSError)

    def _apply(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> None:
        try:
            op = fields[b"op"].decode()
            item_id = fields[b"item_id"].decode()
            attributes = json.loads(fields.get(b"attributes", b"{}"))
            if op == "upsert" and isinstance(attributes, dict):
                self.state.upsert(item_id, attributes)
            elif op == "delete":
                self.state.delete(item_id)
            else:
                raise ValueError(f"op must be 'upsert' (with an attributes object) or 'delete', got {op!r}")
        except (KeyError, ValueError, UnicodeDecodeError) as err:
            log.error("bad change-feed entry %s (%s): moved to %s:dead", entry_id, err, self.stream)
            self.client.xadd(f"{self.stream}:dead", {**fields, b"error": str(err)})
            self.dead += 1
            return
        self.applied += 1
        self.lag_ms = time.time() * 1000 - int(entry_id.split(b"-")[0])

    def replay_history(self) -> int:
        """Re-apply every entry already in the stream, oldest first (at start, before serving)."""
        count, start = 0, "-"
        while True:
            batch = self.client.xrange(self.stream, min=start, max="+", count=1000)
            if not batch:
                return count
            for entry_id, fields in batch:
                self._apply(entry_id, fields)
                count += 1
            start = "(" + batch[-1][0].decode()  # exclusive: after the last one read

    def _ensure_group(self) -> None:
        import redis

        try:
            # A new group starts at the end: what is older is covered by replay_history.
            self.client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def poll(self, block_ms: int = 100, count: int = 256) -> int:
        """Apply what the group has for this consumer: its own pending entries first, then new ones."""
        handled = 0
        for start in ("0", ">"):
            reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=count,
                                           block=None if start == "0" else block_ms)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    if fields:  # a pending entry deleted from the stream comes back empty
                        self._apply(entry_id, fields)
                    self.client.xack(self.stream, self.group, entry_id)
                    handled += 1
        return handled

    def start(self) -> None:
        """Join the group, catch up on history, then follow the stream in a background thread."""
        self._ensure_group()  # before the replay, so nothing added in between is missed
        self.replay_history()
        self._thread = threading.Thread(target=self._run, daemon=True, name="embrecall-change-feed")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except self._errors as err:
                log.warning("change feed unavailable (%s); retrying", err)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
