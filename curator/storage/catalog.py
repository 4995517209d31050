"""The catalog of tenants: names resolved to stable numeric ids that are never reused.

Below the Database facade every tenant is its id: the index, access lists, API keys and cache
partitions all use it, so a tenant re-created under a dropped tenant's name is a different
tenant by construction and inherits nothing. The catalog is read without locks (a dict lookup)
and changed only by the Database's single writer, inside the LMDB write transaction that makes
the change durable (`put`/`delete`), then in memory (`apply`/`forget`) once it committed.

Each tenant record also holds the tenant's own write counter (`seq`: what a tenant key sees
instead of the database-wide sequence, which would reveal other tenants' writes) and the
tenants it may share vectors with (`share_with`, granted by the admin).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from curator.errors import NotFound
from curator.storage.store import Store

__all__ = ["Catalog", "TenantRecord"]

_COUNTER = b"next_tenant_id"


@dataclasses.dataclass(frozen=True)
class TenantRecord:
    name: str
    id: int
    created: float
    seq: int = 0
    share_with: frozenset[int] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "seq": self.seq,
            "share_with": sorted(self.share_with),
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> TenantRecord:
        return cls(
            name, int(d["id"]), d.get("created", 0.0), int(d.get("seq", 0)),
            frozenset(d.get("share_with", ())),
        )  # fmt: skip


class Catalog:
    """Tenants by name and by id (in memory, mirrored in LMDB's `tenants` sub-database)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with store.read() as txn:
            recs = [TenantRecord.from_json(n, d) for n, d in store.all_json(txn, "tenants").items()]
        self._by_name = {r.name: r for r in recs}
        self._by_id = {r.id: r for r in recs}

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def ids(self) -> set[int]:
        return set(self._by_id)

    def get(self, name: str) -> TenantRecord | None:
        return self._by_name.get(name)

    def by_id(self, tid: int) -> TenantRecord | None:
        return self._by_id.get(tid)

    def tenant(self, name: str) -> TenantRecord:
        rec = self._by_name.get(name)
        if rec is None:
            raise NotFound(f"expected a known tenant, got {name!r}")
        return rec

    def name_of(self, tid: int) -> str:
        rec = self._by_id.get(tid)
        return rec.name if rec is not None else ""

    # -- changes: in the write transaction, then in memory once committed -----------------
    def new(self, txn: Any, name: str, tid: int | None = None) -> TenantRecord:
        """A new tenant record: the next local id, or `tid` when a control plane (cluster
        mode) allocated the id; the local counter then moves past it, so no id is reused."""
        if tid is None:
            tid = self.store.next_counter(txn, _COUNTER)
        else:
            self.store.raise_counter(txn, _COUNTER, tid)
        rec = TenantRecord(name, tid, time.time())
        self.put(txn, rec)
        return rec

    def put(self, txn: Any, rec: TenantRecord) -> None:
        self.store.put_json(txn, "tenants", rec.name, rec.to_json())

    def delete(self, txn: Any, rec: TenantRecord) -> list[TenantRecord]:
        """Delete `rec`, and remove it from every other tenant's share list; returns the
        changed records to `apply`."""
        self.store.delete_key(txn, "tenants", rec.name)
        changed = []
        for other in self._by_id.values():
            if rec.id in other.share_with and other.id != rec.id:
                new = dataclasses.replace(other, share_with=other.share_with - {rec.id})
                self.put(txn, new)
                changed.append(new)
        return changed

    def bump(self, txn: Any, rec: TenantRecord) -> TenantRecord:
        """The tenant's write counter + 1 (its sequence number for this write)."""
        new = dataclasses.replace(rec, seq=rec.seq + 1)
        self.put(txn, new)
        return new

    def apply(self, *recs: TenantRecord) -> None:
        for r in recs:
            self._by_name[r.name] = r
            self._by_id[r.id] = r

    def forget(self, rec: TenantRecord) -> None:
        self._by_name.pop(rec.name, None)
        self._by_id.pop(rec.id, None)
