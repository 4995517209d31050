"""One budget of cores for the index's background work.

Training a tree, linking tenants' graphs: each keeps a core busy for seconds. Run together
on a small machine, they leave searches no core, and the kernel's time slices (a few ms)
show up as search latency (bench.retrain on 2 cores: search p99 during a retrain 1.2x outside
one with one background job at a time, 4.8x with two). Background jobs take a slot here
first, so at most cores - 1 of them (at least one) run at a time; a training (`urgent`) goes
before link builds, which a stream of writes can keep queued forever. Only background
threads wait here, and never while holding a lock a request could need.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["SLOTS", "background_slot"]

#: Background jobs that may run at once: one core is left to requests.
SLOTS = max(1, (os.cpu_count() or 1) - 1)


class _Budget:
    def __init__(self, slots: int) -> None:
        self._cv = threading.Condition()
        self._free = slots
        self._urgent = 0  # urgent jobs waiting: others let them go first

    @contextlib.contextmanager
    def slot(self, urgent: bool) -> Iterator[None]:
        with self._cv:
            self._urgent += urgent
            try:
                self._cv.wait_for(lambda: self._free > 0 and (urgent or not self._urgent))
            finally:
                self._urgent -= urgent
            self._free -= 1
        try:
            yield
        finally:
            with self._cv:
                self._free += 1
                self._cv.notify_all()


_budget = _Budget(SLOTS)


def background_slot(urgent: bool = False) -> contextlib.AbstractContextManager[None]:
    """`with background_slot(): ...` runs the block once a slot is free (urgent: before any
    waiting non-urgent job)."""
    return _budget.slot(urgent)
