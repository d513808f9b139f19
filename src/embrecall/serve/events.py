"""User events online: what a user clicked since the bundle was built, in their next recall.

``POST /v1/events`` hands events to a ``Histories`` store; a recall reads the user's recent
events from it and appends them to the stored profile (``ServingVersion.history``), so the
user tower, ItemCF and the others see the click on the next request.  The user-vector cache key
holds the history the tower reads, so a new event can never be answered from a stale vector.

* ``MemoryHistories``: in this process (one replica; lost on restart).
* ``RedisHistories``: in Redis, shared by replicas and kept across their restarts.  One Lua
  script appends each event to the stream ``<stream>`` (``XADD``) and to the user's list
  ``<stream>:h:<user>`` (the last ``keep`` events, expiring after ``ttl_s`` without one) in one
  step, so an accepted event is in both or neither.  Each replica keeps local copies of the
  histories it served recently and follows the stream in its own consumer group (named after
  it) to update them, acknowledging an entry once its copy holds it; it also knows which users
  have a list at all (a ``SCAN`` when it joins, then the stream), so a recall of a user without
  events costs no round trip.  A restarted replica starts with no copies and reads each list
  from Redis on first use, so nothing is lost with it.  If Redis fails, events are refused
  (503) and recalls go on from the stored profiles, counted in ``failures``, asking Redis again
  after ``backoff_s``; the copies are dropped and read again once it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from embrecall.errors import Unavailable
from embrecall.serve.schemas import UserEvent
from embrecall.serve.stream import Entry, StreamFollower, as_text, entry_order

__all__ = ["Histories", "MemoryHistories", "RedisHistories", "Stamped"]

log = logging.getLogger("embrecall.serve.events")

Stamped = tuple[int, str]  # (unix seconds, item id)


class Histories(Protocol):
    def add(self, events: Sequence[UserEvent]) -> int:
        """Store events (in the order given); returns how many."""
        ...

    def recent(self, user_ids: Sequence[str]) -> list[list[Stamped]]:
        """Each user's recent events, oldest first (empty for a user with none, or when unavailable)."""
        ...


def _when(event: UserEvent) -> int:
    return event.timestamp if event.timestamp is not None else int(time.time())


_USER_BYTES = 700  # what a kept user costs beyond its id: the dict entries, the deque, its blocks
_EVENT_BYTES = 130  # what an event costs beyond its item id: the tuple, the int, the string header


class MemoryHistories:
    """The last ``keep`` events of up to ``max_users`` users in at most about ``max_bytes``: the
    least recently active users are dropped first (``dropped`` counts them). Bytes are counted
    as events come and go, so a post costs its own events, not its users' histories."""

    def __init__(self, keep: int = 200, max_users: int = 1_000_000, max_bytes: int = 256 << 20):
        self.keep, self.max_users, self.max_bytes = keep, max_users, max_bytes
        self._users: OrderedDict[str, deque[Stamped]] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self.bytes = self.dropped = 0
        self._lock = threading.Lock()

    def add(self, events: Sequence[UserEvent]) -> int:
        with self._lock:
            for e in events:
                history = self._users.get(e.user_id)
                if history is None:
                    history = self._users[e.user_id] = deque(maxlen=self.keep)
                    self._count(e.user_id, _USER_BYTES + len(e.user_id))
                if len(history) == self.keep:  # the oldest event makes room
                    self._count(e.user_id, -_EVENT_BYTES - len(history[0][1]))
                history.append((_when(e), e.item_id))
                self._count(e.user_id, _EVENT_BYTES + len(e.item_id))
                self._users.move_to_end(e.user_id)
            while self._users and (len(self._users) > self.max_users or self.bytes > self.max_bytes):
                user, _ = self._users.popitem(last=False)
                self.bytes -= self._bytes.pop(user)
                self.dropped += 1
        return len(events)

    def _count(self, user: str, size: int) -> None:
        self._bytes[user] = self._bytes.get(user, 0) + size
        self.bytes += size

    @property
    def users(self) -> int:
        return len(self._users)

    def recent(self, user_ids: Sequence[str]) -> list[list[Stamped]]:
        with self._lock:
            return [list(self._users.get(u, ())) for u in user_ids]


# KEYS[1]: the stream; ARGV: max stream length, events kept per user, list TTL, then user, item, time per event.
_ADD = """
local out = {}
for i = 4, #ARGV, 3 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'user_id', ARGV[i], 'item_id', ARGV[i + 1],
                        'timestamp', ARGV[i + 2])
  local key = KEYS[1] .. ':h:' .. ARGV[i]
  redis.call('RPUSH', key, id .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 1])
  redis.call('LTRIM', key, -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', key, ARGV[3])
  out[#out + 1] = id
end
return out
"""


class RedisHistories(StreamFollower):
    """Histories in Redis with local copies kept current by the event stream (see the module)."""

    name = "user events"

    def __init__(
        self,
        url: str,
        stream: str = "embrecall:events",
        consumer: str = "embrecall-1",
        keep: int = 200,
        ttl_s: int = 30 * 86_400,
        max_len: int = 1_000_000,
        local_users: int = 100_000,
        backoff_s: float = 5.0,
    ):
        """``keep``: events kept per user; ``ttl_s``: a user's list expires after this long without an
        event; ``max_len``: stream entries kept (approximately); ``local_users``: local copies kept."""
        # Requests fail fast when Redis is slow; the stream follower waits longer (a busy machine
        # answers a blocking read late, and each timeout makes the replica drop its copies).
        self.client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        super().__init__(
            redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2), stream, consumer, consumer
        )
        self.keep, self.ttl_s, self.max_len = keep, ttl_s, max_len
        self.local_users, self.backoff_s = local_users, backoff_s
        self._add = self.client.register_script(_ADD)
        self._local: OrderedDict[str, list[tuple[str, int, str]]] = OrderedDict()  # user -> (entry id, time, item)
        # Users with a list in Redis: found at start, then from the stream.  A recall of anyone else
        # (most users, most of the time) costs no round trip.  None until the replica has joined.
        self._active: set[str] | None = None
        self._latest: OrderedDict[str, str] = OrderedDict()  # user -> newest entry id seen in the stream
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.failures = 0
        self._joined = False

    # ------------------------------------------------------------------ writing

    def add(self, events: Sequence[UserEvent]) -> int:
        """Store events in Redis (list and stream together), and in this replica's copies at once."""
        times = [_when(e) for e in events]
        args: list[str | int] = [self.max_len, self.keep, self.ttl_s]
        for e, ts in zip(events, times):
            args += [e.user_id, e.item_id, ts]
        try:
            ids: Any = self._add(keys=[self.stream], args=args)
        except (redis.RedisError, OSError) as err:
            self._failed()
            raise Unavailable(f"events cannot be stored now (Redis: {err}); send them again") from err
        self._apply([(as_text(i), e.user_id, ts, e.item_id) for i, e, ts in zip(ids, events, times)])
        return len(events)

    # ------------------------------------------------------------------ reading

    def _failed(self) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self.backoff_s

    @staticmethod
    def _parse(raw: bytes | str) -> tuple[str, int, str]:
        entry_id, ts, item = as_text(raw).split(" ", 2)
        return entry_id, int(ts), item

    def recent(self, user_ids: Sequence[str]) -> list[list[Stamped]]:
        with self._lock:
            found = {u: list(self._local[u]) for u in user_ids if u in self._local}  # copies: the follower appends
            missing = [
                u for u in dict.fromkeys(user_ids) if u not in found and (self._active is None or u in self._active)
            ]
        if missing and time.monotonic() >= self._down_until:
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for u in missing:
                        pipe.lrange(f"{self.stream}:h:{u}", 0, -1)
                    lists = pipe.execute()
            except (redis.RedisError, OSError):
                self._failed()
                lists = []
            with self._lock:
                for u, raw in zip(missing, lists):
                    found[u] = [self._parse(r) for r in raw]
                    newest = found[u][-1][0] if found[u] else "0-0"
                    if entry_order(self._latest.get(u, "0-0")) <= entry_order(newest):  # else read before an event the
                        self._local[u] = list(found[u])  # stream has delivered since
                        self._local.move_to_end(u)
                while len(self._local) > self.local_users:
                    self._local.popitem(last=False)
        return [[(ts, item) for _, ts, item in found.get(u, ())] for u in user_ids]

    # ------------------------------------------------------------------ following the stream

    def _apply(self, events: Sequence[tuple[str, str, int, str]]) -> None:
        """Note each (entry id, user, time, item) in its user's local copy, if this replica holds one."""
        with self._lock:
            for eid, user, ts, item in events:
                if self._active is not None:
                    self._active.add(user)
                if entry_order(eid) > entry_order(self._latest.get(user, "0-0")):
                    self._latest[user] = eid
                    self._latest.move_to_end(user)
                held = self._local.get(user)
                if held is not None and (not held or entry_order(eid) > entry_order(held[-1][0])):  # else it holds it
                    held.append((eid, ts, item))
                    del held[: -self.keep]
            while len(self._latest) > self.local_users:
                self._latest.popitem(last=False)

    def _entries(self, entries: Sequence[Entry]) -> list[tuple[str, str, int, str]]:
        """Stream entries as events; one not written by ``add`` is logged and skipped."""
        out = []
        for entry_id, fields in entries:
            try:
                out.append(
                    (
                        as_text(entry_id),
                        as_text(fields[b"user_id"]),
                        int(fields[b"timestamp"]),
                        as_text(fields[b"item_id"]),
                    )
                )
            except (KeyError, ValueError, UnicodeDecodeError):
                log.error("user events: malformed entry %s in %s skipped", as_text(entry_id), self.stream)
        return out

    def handle(self, entries: Sequence[Entry]) -> None:
        self._apply(self._entries([e for e in entries if e[1]]))  # a pending entry trimmed away comes back empty

    def _join(self) -> None:
        """This replica's group, created at the stream's end (what came before is in the lists), its
        entries pending from before a restart, then the users who have lists (after the group
        exists, so that a user whose first event comes meanwhile is met in the stream)."""
        try:
            self.follower.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        while self.poll("0", block_ms=None):
            pass
        prefix = f"{self.stream}:h:"
        active = {as_text(k)[len(prefix) :] for k in self.follower.scan_iter(match=prefix + "*", count=10_000)}
        with self._lock:
            self._active = active | (self._active or set())

    def step(self) -> None:
        if not self._joined:
            self._join()
            self._joined = True
        self.poll(count=512)

    def recover(self, group_lost: bool) -> None:
        """Whatever failed, the copies may now miss what was sent meanwhile (or hold what Redis
        lost): drop them, and join again (re-creating the group if it is gone)."""
        self._forget()
        self._joined = False

    def _forget(self) -> None:
        """Drop the local copies and the list of active users (until the next join)."""
        with self._lock:
            self._local.clear()
            self._active = None
