"""The controller's scan for stranded moves (scale-out.md §5.7: "a move that cannot finish
aborts cleanly"; §5.8).

A move record names its driver's lease. A move is stranded when its record has not changed
for `stall_s` seconds of this controller's clock and its driver's lease is gone (the driver
was killed), or the driver is this node and no thread of it drives the move any more. The
elected controller (curator.cluster.election) hands stranded moves to a mover that resumes
them; the mover aborts a move that fails before its flip and rolls one after it forward.

Revisions, not timestamps, measure progress: node clocks may disagree, a record's revision
cannot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from curator.cluster.contracts import ControlPlane

__all__ = ["Controller"]


class Controller:
    """`lease_alive(id)`: whether a driver's lease still exists (may raise Unavailable);
    `own_lease()`: this node's lease id."""

    def __init__(
        self,
        control: ControlPlane,
        lease_alive: Callable[[int], bool],
        own_lease: Callable[[], int],
        stall_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = control
        self.lease_alive = lease_alive
        self.own_lease = own_lease
        self.stall_s = stall_s
        self.clock = clock
        self._seen: dict[str, tuple[int, float]] = {}  # tenant -> (revision, first seen at)

    def forget(self) -> None:
        """Drop what the scans saw (the role was lost: a new term starts its clocks anew)."""
        self._seen.clear()

    def retry_later(self, tenant: str) -> None:
        """Wait another `stall_s` before `tenant`'s move counts as stranded again (a recovery
        that failed, e.g. with a node of the move down, is not retried in a tight loop)."""
        self._seen.pop(tenant, None)

    def scan(self, busy: Collection[str] = ()) -> list[str]:
        """Tenants whose moves are stranded, except those in `busy` (being recovered)."""
        now = self.clock()
        moves = self.control.moves()
        for gone in set(self._seen) - set(moves):
            del self._seen[gone]
        out = []
        for tenant, rec in sorted(moves.items()):
            seen = self._seen.get(tenant)
            if seen is None or seen[0] != rec.revision:
                self._seen[tenant] = (rec.revision, now)  # it moved on: a clock starts
                continue
            if tenant in busy or now - seen[1] < self.stall_s:
                continue
            mine = rec.driver_lease == self.own_lease()  # and not busy: its thread ended
            if mine or not self.lease_alive(rec.driver_lease):
                out.append(tenant)
        return out
