"""Item changes from a Redis Stream, applied to the live index in near real time.

Producers ``XADD`` entries ``{op: upsert|delete, item_id, attributes: <JSON object>}`` (see
``send_item_change``).  Each replica reads them in its own consumer group (named after it: every
replica must apply every change) and acknowledges an entry once the index holds it.  An entry
that ``PUT /v1/items`` would refuse is acknowledged and copied to ``<stream>:dead``, so it cannot
block the feed.

The stream does not grow for ever.  Once it holds more than ``max_len`` entries, a replica writes
a *snapshot* into Redis (``<stream>:snapshot``: the latest change of every item changed so far,
and ``<stream>:snapshot:at``: the last entry it covers), then trims the entries that every
consumer group has acknowledged.  A starting replica loads the snapshot and replays only the
entries after it (so a restart costs the items changed, not the changes made), and its group
then starts where that replay ended; the service is ready only after this.  If Redis loses the
stream or the group (a restart without persistence), the replica re-creates them where it stood,
logs it and counts it in ``embrecall_change_feed_resets_total``; its next snapshot puts the
history back.  A group whose replica is gone for good holds trimming back: remove it with
``XGROUP DESTROY``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from pydantic import ValidationError

from embrecall.errors import DataError, Unavailable
from embrecall.serve.schemas import ItemChange
from embrecall.serve.state import Attributes, ServiceState
from embrecall.serve.stream import Entry, StreamFollower, as_text, entry_order

__all__ = ["ChangeFeed", "send_item_change"]

log = logging.getLogger("embrecall.serve.feed")

COMPACT_EVERY_S = 5.0  # how often a replica checks whether the stream needs a snapshot and a trim


def send_item_change(
    client: redis.Redis, stream: str, op: str, item_id: str, attributes: Mapping[str, object] | None = None
) -> str:
    """Append one change to the stream; returns its entry id."""
    fields = {"op": op, "item_id": item_id, "attributes": json.dumps(dict(attributes or {}))}
    return as_text(client.xadd(stream, fields))  # type: ignore[arg-type]


class ChangeFeed(StreamFollower):
    name = "change feed"

    def __init__(
        self,
        state: ServiceState,
        url: str,
        stream: str = "embrecall:items",
        group: str | None = None,
        consumer: str = "embrecall-1",
        max_len: int = 10_000,
    ):
        """``consumer``: this replica's name, kept across its restarts (``group`` defaults to it);
        ``max_len``: stream entries above which a snapshot is written and the stream trimmed."""
        self.client = redis.Redis.from_url(url)
        super().__init__(self.client, stream, group or consumer, consumer)
        self.state, self.max_len = state, max_len
        self.position = "0-0"  # the last entry applied
        self.dead = self.resets = self.replayed = 0
        self.lag_ms = 0.0  # age of the newest applied entry when it was applied
        self.ready = threading.Event()  # set once the start-up replay is done
        self._next_compaction = 0.0

    # ------------------------------------------------------------------ entries

    def _parse(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> ItemChange | None:
        """The entry as a change, or None once a malformed one is set aside."""
        try:
            raw = {as_text(k): as_text(v) for k, v in fields.items()}
            change = ItemChange.model_validate(
                {
                    "op": raw.get("op"),
                    "item_id": raw.get("item_id"),
                    "attributes": json.loads(raw.get("attributes", "{}")),
                }
            )
        except (ValueError, UnicodeDecodeError) as err:  # pydantic's ValidationError and JSON errors included
            reason = (
                str(err).splitlines()[0]
                if not isinstance(err, ValidationError)
                else "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            )
            self._set_aside(entry_id, fields, reason)
            return None
        return change

    def _set_aside(self, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str) -> None:
        log.error("bad change-feed entry %s (%s): moved to %s:dead", as_text(entry_id), reason, self.stream)
        entry: dict[Any, Any] = {**fields, b"error": reason.encode()}
        self.client.xadd(f"{self.stream}:dead", entry)
        self.dead += 1

    def _changes_of(self, entries: Sequence[Entry]) -> dict[str, Attributes]:
        """The latest valid change per item among ``entries`` (oldest first).  Only what can take
        effect is checked: each item's entries from the newest back to the first valid one (a
        replay of 100,000 changes of a few items checks a few); the malformed ones met are set aside."""
        by_item: dict[bytes, list[Entry]] = {}
        for entry_id, fields in entries:
            if fields:  # a pending entry deleted from the stream comes back empty
                by_item.setdefault(fields.get(b"item_id", b""), []).append((entry_id, fields))
        latest: dict[str, Attributes] = {}
        for versions in by_item.values():
            for entry_id, fields in reversed(versions):
                if (change := self._parse(entry_id, fields)) is not None:
                    latest[change.item_id] = change.attributes if change.op == "upsert" else None
                    break
        return latest

    def _apply(self, changes: dict[str, Attributes]) -> None:
        """Apply together; if the batch is refused (an item whose vector is not finite), one by one."""
        try:
            self.state.apply(changes, origin="feed")
        except DataError:
            for item_id, change in changes.items():
                try:
                    self.state.apply({item_id: change}, origin="feed")
                except DataError as err:
                    self._set_aside(
                        b"?",
                        {b"op": b"upsert", b"item_id": item_id.encode(), b"attributes": json.dumps(change).encode()},
                        str(err),
                    )

    def publish(self, op: str, item_id: str, attributes: Mapping[str, object] | None = None) -> None:
        """Send a change made on this replica to every replica (this one re-applies it: the same result)."""
        try:
            send_item_change(self.client, self.stream, op, item_id, attributes)
        except (redis.RedisError, OSError) as err:
            raise Unavailable(
                f"item {item_id!r} changed on this replica only: the change feed is down ({err}); send the change again"
            ) from err

    # ------------------------------------------------------------------ start-up

    def catch_up(self) -> int:
        """Load the snapshot, replay the entries after it, and start this replica's group where that
        ended; returns the entries replayed.  The group sits at the stream's start meanwhile, so no
        replica trims what this one has still to read."""
        self._create_group("0")
        at = as_text(self.client.get(f"{self.stream}:snapshot:at") or "0-0")
        snapshot = {as_text(k): json.loads(v) for k, v in self.client.hgetall(f"{self.stream}:snapshot").items()}
        changes: dict[str, Attributes] = dict(snapshot)
        self.position, start, replayed = at, "(" + at, 0
        while batch := self._range(start):
            changes.update(self._changes_of(batch))
            replayed += len(batch)
            self.position = as_text(batch[-1][0])
            start = "(" + self.position
        self._apply(changes)
        self.client.xgroup_setid(self.stream, self.group, self.position)
        self.replayed = replayed
        self.applied += replayed
        return replayed

    def _range(self, start: str) -> list[Entry]:
        reply: Any = self.client.xrange(self.stream, min=start, max="+", count=10_000)
        return reply

    def _create_group(self, at: str) -> None:
        """This replica's group, new, at entry ``at`` (its pending entries are covered by the replay)."""
        try:
            self.client.xgroup_destroy(self.stream, self.group)
        except redis.ResponseError:
            pass  # no stream or no group yet
        self.client.xgroup_create(self.stream, self.group, id=at, mkstream=True)

    # ------------------------------------------------------------------ following

    def handle(self, entries: Sequence[Entry]) -> None:
        self._apply(self._changes_of(entries))
        self.position = as_text(entries[-1][0])
        self.lag_ms = time.time() * 1000 - entry_order(entries[-1][0])[0]

    def compact(self) -> int:
        """Snapshot, then trim what every group has acknowledged; returns the entries trimmed."""
        self._write_snapshot()
        floors = []
        groups: Any = self.client.xinfo_groups(self.stream)
        for group in groups:
            if group["pending"]:
                pending: Any = self.client.xpending(self.stream, group["name"])
                floors.append(as_text(pending["min"]))
            else:
                floors.append(as_text(group["last-delivered-id"]))
        floor = min(floors, key=entry_order) if floors else None
        return int(self.client.xtrim(self.stream, minid=floor, approximate=False)) if floor else 0

    def _write_snapshot(self) -> None:
        """Replace the snapshot with this replica's changes, unless a newer one is there already."""
        key, at_key = f"{self.stream}:snapshot", f"{self.stream}:snapshot:at"
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(at_key)
                current = pipe.get(at_key)
                if current is not None and entry_order(current) >= entry_order(self.position):
                    return
                pipe.multi()
                pipe.delete(key)
                items = list(self.state.from_feed().items())
                for i in range(0, len(items), 10_000):
                    pipe.hset(key, mapping={item: json.dumps(change) for item, change in items[i : i + 10_000]})
                pipe.set(at_key, self.position)
                pipe.execute()
            except redis.WatchError:
                pass  # another replica wrote one meanwhile: it is at least as new

    def step(self) -> None:
        self.poll()
        if time.monotonic() >= self._next_compaction:
            self._next_compaction = time.monotonic() + COMPACT_EVERY_S
            if self.client.xlen(self.stream) > self.max_len:
                log.info("change feed: snapshot at %s, %d entries trimmed", self.position, self.compact())

    def recover(self, group_lost: bool) -> None:
        if group_lost:  # re-created where this replica stood; its next snapshot puts the history back
            self.resets += 1
            self._create_group(self.position)

    def start(self) -> None:
        """Catch up (before the service is ready), then follow the stream in a background thread."""
        self.catch_up()
        self.ready.set()
        super().start()
