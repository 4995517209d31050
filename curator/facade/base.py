"""What the Database's mixins (tenants, collections, writes, reads) share: the state the
Database sets up on open, and the helpers that resolve collections, tenants and owners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curator.auth import KeyRing
from curator.cache.semantic_cache import SemanticCache
from curator.config import DatabaseConfig
from curator.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from curator.storage.catalog import Catalog, TenantRecord
from curator.storage.collection import Collection
from curator.storage.collection import CollectionInfo as CollectionRecord
from curator.storage.handoff import Handoff
from curator.storage.snapshotter import Snapshotter
from curator.storage.store import Store
from curator.storage.trainer import Trainer
from curator.validation import check_name

__all__ = ["FacadeBase"]


class FacadeBase:
    """The Database's state (set by Database._open) and its name-resolving helpers."""

    config: DatabaseConfig
    path: Path
    backup_dir: Path
    store: Store
    catalog: Catalog
    keys: KeyRing
    cache: SemanticCache
    _collections: dict[str, Collection]
    _write_lock: Any  # threading.RLock: one writer at a time, database-wide
    _handoff: Handoff  # frozen / moved tenants (tenant moves, curator/storage/handoff.py)
    _snap_dir: Path
    _snapshots: Snapshotter
    _trainer: Trainer
    _background: bool
    _opened: float

    def _collection(self, name: str) -> Collection:
        c = self._collections.get(name) if isinstance(name, str) else None
        if c is None:
            raise NotFound(f"expected a known collection, got {name!r}")
        return c

    def _tenant_id(self, name: str) -> int:
        return self.catalog.tenant(check_name(name, "tenant")).id

    def _cache_tenant(self, name: str) -> str:
        """The cache's key of a tenant: its stable id, never its (reusable) name."""
        return _cache_key(self._tenant_id(name))

    def _owner_for(
        self, tenant: str | None, owner: str | None, what: str, foreign_ok: bool
    ) -> tuple[TenantRecord | None, TenantRecord | None]:
        """(acting tenant's record or None for the admin, owner's record) of a call on ids.
        A tenant never learns whether another tenant's name exists: naming another owner is
        refused before the name is looked up, and where it is allowed (`foreign_ok`: a
        grantee dropping a share) an unknown owner comes back as None, to be reported exactly
        like an unknown id."""
        actor = self.catalog.tenant(check_name(tenant, "tenant")) if tenant is not None else None
        if owner is None:
            if actor is None:
                raise InvalidArgument(f"expected the owner of the ids to {what} (admin)")
            return actor, actor
        check_name(owner, "tenant")
        if actor is None:
            return None, self.catalog.tenant(owner)
        if owner != actor.name and not foreign_ok:
            raise PermissionDenied(f"expected to {what} the tenant's own ids, got another's")
        return actor, self.catalog.get(owner)

    def _check_batch(self, n: int) -> None:
        if n > self.config.max_batch:
            raise ResourceExhausted(
                f"expected at most {self.config.max_batch} ids per request, got {n}"
            )


_NO_IDS = np.empty(0, np.uint64)


def _cache_key(tid: int) -> str:
    return f"#{tid}"


def _new_index(info: CollectionRecord) -> Any:
    from curator.index.curator_index import CuratorIndex

    return CuratorIndex(info.dim, info.metric, info.config)
