"""The cache's ledger: the in-memory metadata of every entry and the quota totals over them.

What it keeps, by entry id: an EntryMeta (partition key, category, digest, times, hit count,
cost, size); by (tenant, category): the entry ids and their bytes; by tenant: (entries, bytes).

Locking: the structure (register / forget) changes only under the cache's write lock and is
read under its read lock. Hit counts change under concurrent lookups, so they (and the set of
entries whose count is not written back yet) have a lock of their own: `record_hit` and
`take_dirty` are atomic against each other, so no hit is lost between a lookup and a flush.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from curator.cache.entry import EntryMeta
from curator.cache.eviction import QuotaView
from curator.cache.partition import PartitionKey
from curator.cache.policy import CategoryPolicy

__all__ = ["Ledger"]


class Ledger:
    """Entry metadata and quota totals (see the module docstring for its locking)."""

    def __init__(self) -> None:
        self.metas: dict[int, EntryMeta] = {}
        self.groups: dict[tuple[str, str], dict[int, None]] = {}  # (tenant, category) -> ids
        self.group_bytes: dict[tuple[str, str], int] = {}
        self.tenant_totals: dict[str, tuple[int, int]] = {}  # tenant -> (entries, bytes)
        self._hits = threading.Lock()
        self._dirty: set[int] = set()  # entries whose hit count is not written back yet

    def __len__(self) -> int:
        return len(self.metas)

    def __contains__(self, entry_id: int) -> bool:
        return entry_id in self.metas

    def get(self, entry_id: int) -> EntryMeta | None:
        return self.metas.get(entry_id)

    def register(self, key: PartitionKey, ids: list[int], metas: list[EntryMeta]) -> None:
        """Count entries (already in their partition) into the metadata and totals."""
        n, b = self.tenant_totals.get(key.tenant, (0, 0))
        self.tenant_totals[key.tenant] = (n + len(ids), b + sum(m.size for m in metas))
        for i, m in zip(ids, metas, strict=True):
            self.metas[i] = m
            g = (key.tenant, m.category)
            self.groups.setdefault(g, {})[i] = None
            self.group_bytes[g] = self.group_bytes.get(g, 0) + m.size

    def forget(self, ids: list[int]) -> list[tuple[int, EntryMeta]]:
        """Drop entries from the metadata and totals; returns those that were there."""
        out = []
        for i in ids:
            m = self.metas.pop(i, None)
            if m is None:
                continue
            out.append((i, m))
            n, b = self.tenant_totals[m.key.tenant]
            self.tenant_totals[m.key.tenant] = (n - 1, b - m.size)
            g = (m.key.tenant, m.category)
            ids_g = self.groups.get(g)
            if ids_g is not None:
                ids_g.pop(i, None)
                self.group_bytes[g] -= m.size
                if not ids_g:
                    del self.groups[g]
                    del self.group_bytes[g]
        with self._hits:
            self._dirty.difference_update(i for i, _ in out)
        return out

    # -- hit counts (their own lock) ----------------------------------------------------------
    def record_hit(self, entry_id: int, now: float) -> EntryMeta | None:
        """Count a hit on an entry; None if it is gone."""
        with self._hits:
            m = self.metas.get(entry_id)
            if m is None:
                return None
            m.hits += 1
            m.last_hit = now
            self._dirty.add(entry_id)
            return m

    def take_dirty(self) -> list[tuple[int, int, float]]:
        """(entry id, hits, last hit) of the entries hit since the last call, consistent with
        the hits counted so far; the set starts over empty."""
        with self._hits:
            ids, self._dirty = self._dirty, set()
            return [(i, m.hits, m.last_hit) for i in ids if (m := self.metas.get(i)) is not None]

    def restore_dirty(self, ids: list[int]) -> None:
        """Put back entries whose write-back failed (the next flush retries them)."""
        with self._hits:
            self._dirty.update(i for i in ids if i in self.metas)

    # -- queries (under the cache's read or write lock) ---------------------------------------
    def select(
        self,
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> list[int]:
        """Ids of the tenant's entries (of a category / model / fingerprint if given)."""
        return [
            i
            for i, m in self.metas.items()
            if m.key.tenant == tenant
            and (category is None or m.category == category)
            and (model is None or m.key.model == model)
            and (fingerprint is None or m.key.fingerprint == fingerprint)
        ]

    def expired(self, now: float, alive: Callable[[int, float], bool]) -> list[int]:
        """Ids past their expiry for which `alive(id, now)` (load-stretched TTLs) is False."""
        return [i for i, m in self.metas.items() if now >= m.expires and not alive(i, now)]

    def usage(self, tenant: str | None) -> Iterator[tuple[str, int, int]]:
        """(category, entries, bytes) of a tenant's groups (None: every tenant's)."""
        for (t, c), ids in self.groups.items():
            if tenant is None or t == tenant:
                yield c, len(ids), self.group_bytes.get((t, c), 0)

    def quota_view(
        self,
        policy: Callable[[str, str], CategoryPolicy],
        tenant_max_entries: int,
        tenant_max_bytes: int,
        evict_slack: float,
    ) -> QuotaView:
        return QuotaView(
            self.groups,
            self.group_bytes,
            self.tenant_totals,
            self.metas,
            policy,
            tenant_max_entries,
            tenant_max_bytes,
            evict_slack,
        )
