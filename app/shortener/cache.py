"""A bounded in-process cache with a time to live, for the redirect lookup (the hot read path).

Links never change once created, so a TTL only bounds how long a deleted (purged) row keeps
redirecting. Least recently used entries are evicted beyond max_entries. An entry past its TTL is
kept until evicted, so a redirect can still be served from it while the database is down.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.ttl > 0

    def get(self, key: str) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return None
            expires, value = item
            if expires <= self.clock():
                # kept (the LRU bound still applies) for get_stale(): served when the database
                # cannot be asked
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def get_stale(self, key: str) -> V | None:
        """The entry even past its time to live (None if never cached or evicted): what the
        redirect serves while the database is down. Not counted as a hit or a miss."""
        with self._lock:
            item = self._data.get(key)
            return item[1] if item is not None else None

    def put(self, key: str, value: V) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._data[key] = (self.clock() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self.evictions += 1

    def invalidate(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)
