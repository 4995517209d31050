"""LocalNodeOps: the NodeOps of a move (curator.cluster.contracts) on an in-process Database.

A server in cluster mode exposes the same calls to a remote mover; this adapter is what it
(and the unit tests and the one-process demo) call. Every call is idempotent.
"""

from __future__ import annotations

from curator.cluster import headroom
from curator.cluster.contracts import BundleStore
from curator.database import Database

__all__ = ["LocalNodeOps"]


class LocalNodeOps:
    def __init__(self, db: Database) -> None:
        self.db = db

    def export_tenant(self, tenant: str, since_seq: int, store: BundleStore, key: str) -> int:
        data, upto = self.db.export_tenant(tenant, since_seq)
        store.put(key, data)
        return upto

    def import_tenant(self, tenant: str, store: BundleStore, key: str) -> dict[str, int]:
        return self.db.import_tenant(store.get(key), tenant)

    def freeze_tenant(self, tenant: str) -> int:
        return self.db.freeze_tenant(tenant)

    def unfreeze_tenant(self, tenant: str) -> None:
        self.db.unfreeze_tenant(tenant)

    def mark_moved(self, tenant: str, node: str, epoch: int) -> None:
        self.db.mark_moved(tenant, node, epoch)

    def drop_moved(self, tenant: str) -> None:
        self.db.drop_moved(tenant)

    def headroom(self) -> int:
        return headroom.headroom(self.db)
