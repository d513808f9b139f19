"""Following a Redis Stream: what the item change feed and the user-events store share.

A follower reads one stream in a consumer group of its own (one per replica: every replica must
see every entry), hands each batch of new entries to ``handle`` and acknowledges them once
handled, in a background thread that outlives Redis failures: a failure is logged, ``recover``
is told whether Redis lost the group (a restart without persistence), and the loop goes on a
second later.  Entry ids and field values come back as bytes; ``as_text`` and ``entry_order``
read them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import redis

__all__ = ["StreamFollower", "Entry", "as_text", "entry_order"]

log = logging.getLogger("embrecall.serve.stream")

Entry = tuple[bytes, dict[bytes, bytes]]  # (entry id, fields); the fields of an entry trimmed away are empty


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), to compare ids."""
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


class StreamFollower:
    """``client``: the connection the follower reads with (its own: a blocking read must not wait
    behind requests); ``name``: what its log lines and thread are called."""

    name = "stream"

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str):
        self.follower, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.applied = 0  # entries handled and acknowledged
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, entries: Sequence[Entry]) -> None:
        """Take a batch of new entries (oldest first); they are acknowledged when this returns."""
        raise NotImplementedError

    def step(self) -> None:
        """One turn of the background loop: read and handle what arrived."""
        self.poll()

    def recover(self, group_lost: bool) -> None:
        """After a failure: ``group_lost`` when Redis no longer has the stream or the group."""

    def poll(self, start: str = ">", block_ms: int | None = 100, count: int = 256) -> int:
        """Handle and acknowledge entries: new ones (``start`` ">"), or this consumer's pending ones
        from before a restart ("0"); returns how many."""
        reply: Any = self.follower.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        entries: list[Entry] = [e for _, batch in reply or [] for e in batch]
        if entries:
            self.handle(entries)
            self.follower.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
            self.applied += len(entries)
        return len(entries)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"embrecall-{self.name}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                continue
            except redis.ResponseError as err:
                lost = "NOGROUP" in str(err)
                if lost:
                    log.error(
                        "%s: stream %s or group %s is gone (Redis restarted empty?); re-creating it",
                        self.name,
                        self.stream,
                        self.group,
                    )
                else:
                    log.exception("%s: unexpected Redis reply; retrying", self.name)
            except (redis.RedisError, OSError) as err:
                lost = False
                log.warning("%s unavailable (%s); retrying", self.name, err)
            except Exception:  # a follower must not die in silence: say it, then go on
                lost = False
                log.exception("%s: unexpected error; retrying", self.name)
            try:
                self.recover(lost)
            except (redis.RedisError, OSError) as err:  # still down: the next turn tries again
                log.warning("%s: recovery failed (%s); retrying", self.name, err)
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
