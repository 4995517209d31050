"""What the gateway adapters remember for feedback: the lookup ids of the answers they served."""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable

__all__ = ["Served"]


class Served:
    """The lookup ids of the last `capacity` answers served, by call key (thread-safe)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._ids: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: Hashable, lookup_id: int) -> None:
        if not lookup_id:
            return
        with self._lock:
            self._ids[key] = lookup_id
            self._ids.move_to_end(key)
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)

    def pop(self, key: Hashable) -> int:
        """The lookup id served for `key` (0: none remembered), forgotten."""
        with self._lock:
            return self._ids.pop(key, 0)
