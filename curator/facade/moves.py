"""The Database's calls for moving a tenant between nodes (scale-out.md §5.7): bundles,
freeze, moved tombstones. The logic is in curator/storage/tenant_moves.py; the driver of a
move is curator/cluster/mover.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curator.facade.base import FacadeBase
from curator.storage import tenant_moves

__all__ = ["TenantMoves"]


class TenantMoves(FacadeBase):
    def export_tenant(self, name: str, since_seq: int = 0) -> tuple[bytes, int]:
        """A bundle of tenant `name` (since_seq 0: everything it owns; else the state of what
        its writes after since_seq touched) and the sequence it reflects."""
        return tenant_moves.export(self._db, name, since_seq)

    def import_tenant(self, data: bytes, tenant: str | None = None) -> dict[str, int]:
        """Apply a bundle from `export_tenant` (of `tenant`, if given; idempotent); returns
        counts of changes."""
        return tenant_moves.import_bundle(self._db, data, tenant)

    def freeze_tenant(self, name: str) -> int:
        """Refuse the tenant's writes (TenantMoving); returns the fence sequence."""
        return tenant_moves.freeze(self._db, name)

    def unfreeze_tenant(self, name: str) -> None:
        tenant_moves.unfreeze(self._db, name)

    def mark_moved(self, name: str, node: str, epoch: int) -> None:
        """Persist that the tenant lives on `node` at `epoch` (TenantMoved from now on)."""
        tenant_moves.mark_moved(self._db, name, node, epoch)

    def drop_moved(self, name: str) -> None:
        """Delete what a moved tenant owns here; its tombstone stays."""
        tenant_moves.drop_moved(self._db, name)

    def moved_to(self, name: str) -> tuple[str, int] | None:
        """(node, epoch) the tenant moved to, or None if it was not moved away."""
        return self._handoff.moved.get(name)

    @property
    def _db(self) -> Database:
        db: Any = self  # the mixin is only ever part of a Database
        return db


if TYPE_CHECKING:
    from curator.database import Database
