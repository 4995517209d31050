"""Single flight: of concurrent identical misses in one partition, one caller generates.

The first miss of a (partition, prompt digest) takes a slot and leads; later misses of the
same prompt see it pending and may wait for the leader's store, which releases the slot. A
slot whose leader never stores lapses after `ttl_s`, and the next miss leads instead.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable

__all__ = ["SingleFlight", "Slot"]


@dataclasses.dataclass
class Slot:
    since: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class SingleFlight:
    """Thread-safe; times are the cache clock's."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._slots: dict[Hashable, Slot] = {}
        self._lock = threading.Lock()

    def claim(self, key: Hashable, now: float) -> Slot | None:
        """None: the caller leads (it took the slot). Else the pending leader's slot."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and now - slot.since < self.ttl_s:
                return slot
            if slot is not None:
                slot.done.set()
            self._slots[key] = Slot(now)
            return None

    def release(self, key: Hashable) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
        if slot is not None:
            slot.done.set()

    def expire(self, now: float) -> int:
        """Give up slots older than ttl_s (their waiters wake up); returns how many."""
        with self._lock:
            stale = [k for k, s in self._slots.items() if now - s.since >= self.ttl_s]
            for k in stale:
                self._slots.pop(k).done.set()
        return len(stale)
