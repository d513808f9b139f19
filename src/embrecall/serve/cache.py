"""User-vector caches: in-process LRU with a TTL, optionally backed by Redis shared by replicas.

Redis is an accelerator, never a dependency of an answer: when it fails the service computes
the vector itself, counts the failure, and stops asking Redis for ``backoff_s`` seconds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

import numpy as np

__all__ = ["VectorCache", "RedisVectorCache"]


class VectorCache:
    """In-process LRU of user vectors with a time-to-live; safe to share between the event loop
    and the thread that answers batch requests."""

    def __init__(self, size: int = 100_000, ttl_s: float = 60.0):
        self.size, self.ttl = size, ttl_s
        self._data: OrderedDict[tuple, tuple[float, np.ndarray]] = OrderedDict()
        self.hits = self.misses = 0
        self._lock = threading.Lock()  # an eviction between a lookup and its move_to_end would raise

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None or time.monotonic() - entry[0] > self.ttl:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: tuple, vector: np.ndarray) -> None:
        with self._lock:
            self._data[key] = (time.monotonic(), vector)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class RedisVectorCache(VectorCache):
    """The in-process LRU in front of Redis (``SET key vector EX ttl``)."""

    def __init__(self, url: str, size: int = 100_000, ttl_s: float = 60.0, backoff_s: float = 5.0):
        import redis

        super().__init__(size, ttl_s)
        self.client = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.05)
        self.backoff = backoff_s
        self.failures = 0
        self._down_until = 0.0
        self._errors = (redis.RedisError, OSError)

    @staticmethod
    def _key(key: tuple) -> str:
        return "embrecall:uv:" + hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self.backoff

    def get(self, key: tuple) -> np.ndarray | None:
        local = super().get(key)
        if local is not None or not self._available():
            return local
        try:
            raw = self.client.get(self._key(key))
        except self._errors:
            self._failed()
            return None
        if raw is None:
            return None
        vector = np.frombuffer(raw, dtype=np.float32)  # type: ignore[arg-type]  # bytes: decode_responses is off
        with self._lock:
            self.misses -= 1  # the local miss turned into a (Redis) hit
            self.hits += 1
        VectorCache.put(self, key, vector)
        return vector

    def put(self, key: tuple, vector: np.ndarray) -> None:
        super().put(key, vector)
        if not self._available():
            return
        try:
            self.client.set(self._key(key), np.asarray(vector, dtype=np.float32).tobytes(), ex=max(1, int(self.ttl)))
        except self._errors:
            self._failed()
