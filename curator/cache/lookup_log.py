"""Recent lookups that feedback may name: which entry a lookup served (or scored), at what score.

A bounded, thread-safe map lookup id -> record; the oldest records are forgotten first. Each
record can be reported on once (`take`), so replaying feedback cannot skew a calibration.
Feedback may also name an entry: it then applies to the latest lookup that served that entry.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading

from curator.errors import InvalidArgument, NotFound

__all__ = ["LookupLog", "LookupRecord", "check_feedback"]


@dataclasses.dataclass(frozen=True)
class LookupRecord:
    """tenant and category of the request; entry_id of the candidate; score: what was compared
    with the threshold; served: a hit."""

    tenant: str
    category: str
    entry_id: int
    score: float
    served: bool


def check_feedback(lookup_id: int, entry_id: int, correct: bool) -> None:
    """Feedback names exactly one of a lookup and an entry (unsigned 64-bit) and a bool."""
    for name, v in (("lookup_id", lookup_id), ("entry_id", entry_id)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise InvalidArgument(f"expected {name} an unsigned 64-bit integer, got {v!r}")
    if (lookup_id == 0) == (entry_id == 0):
        raise InvalidArgument(
            f"expected exactly one of lookup_id and entry_id, got {lookup_id} and {entry_id}"
        )
    if not isinstance(correct, bool):
        raise InvalidArgument(f"expected correct a bool, got {correct!r}")


class LookupLog:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: collections.OrderedDict[int, LookupRecord] = collections.OrderedDict()
        self._by_entry: dict[tuple[str, int], int] = {}  # (tenant, entry) -> latest lookup id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: LookupRecord) -> int:
        with self._lock:
            lookup_id = next(self._ids)
            self._records[lookup_id] = record
            if record.served:
                self._by_entry[(record.tenant, record.entry_id)] = lookup_id
            while len(self._records) > self.capacity:
                old_id, old = self._records.popitem(last=False)
                self._drop_entry_ref(old_id, old)
            return lookup_id

    def take(self, tenant: str, lookup_id: int = 0, entry_id: int = 0) -> LookupRecord:
        """The record of the tenant's lookup `lookup_id` (or of the latest lookup that served
        `entry_id`), removed. Raises NotFound when there is none (unknown, another tenant's,
        forgotten, or already reported)."""
        with self._lock:
            if lookup_id:
                rec = self._records.get(lookup_id)
                what = f"lookup {lookup_id}"
            else:
                lookup_id = self._by_entry.get((tenant, entry_id), 0)
                rec = self._records.get(lookup_id)
                what = f"a recent lookup served by entry {entry_id}"
            if rec is None or rec.tenant != tenant:
                raise NotFound(
                    f"expected {what} of this tenant not yet reported on (the last "
                    f"{self.capacity} lookups are kept), got none"
                )
            del self._records[lookup_id]
            self._drop_entry_ref(lookup_id, rec)
            return rec

    def forget(self, tenant: str) -> None:
        with self._lock:
            for i in [i for i, r in self._records.items() if r.tenant == tenant]:
                self._drop_entry_ref(i, self._records.pop(i))

    def _drop_entry_ref(self, lookup_id: int, rec: LookupRecord) -> None:
        k = (rec.tenant, rec.entry_id)
        if self._by_entry.get(k) == lookup_id:
            del self._by_entry[k]
