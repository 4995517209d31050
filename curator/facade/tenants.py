"""Tenant administration on the Database (a mixin): tenants, sharing allow-lists, API keys.

Every change runs under the Database's writer lock and resolves names inside it, so a call
racing a drop of the same tenant is refused, never half-applied."""

from __future__ import annotations

import dataclasses
from typing import Any

from curator.errors import (
    AlreadyExists,
    InvalidArgument,
)
from curator.facade.base import _NO_IDS, FacadeBase, _cache_key
from curator.results import (
    IssuedKey,
    KeyInfo,
)
from curator.storage import quota
from curator.storage.catalog import TenantRecord
from curator.storage.store import OP_DROP_TENANT
from curator.validation import check_name

__all__ = ["TenantAdmin"]


class TenantAdmin(FacadeBase):
    def create_tenant(self, name: str, *, tenant_id: int | None = None) -> None:
        """Create a tenant. `tenant_id` is for cluster mode, where the control plane
        allocates ids so that a tenant keeps its id on every node; it must be unused."""
        name = check_name(name, "tenant")
        bad_type = isinstance(tenant_id, bool) or not isinstance(tenant_id, int)
        if tenant_id is not None and (bad_type or not 0 < tenant_id < 2**32):
            raise InvalidArgument(f"expected a tenant id in [1, 2**32), got {tenant_id!r}")
        with self._write_lock:
            self._handoff.check_write(name)
            if self.catalog.get(name) is not None:
                raise AlreadyExists(f"expected a new tenant name, got existing {name!r}")
            if tenant_id is not None and self.catalog.by_id(tenant_id) is not None:
                raise AlreadyExists(f"expected an unused tenant id, got {tenant_id}")
            self.catalog.apply(self.store.write(lambda txn: self.catalog.new(txn, name, tenant_id)))

    def list_tenants(self) -> list[str]:
        return self.catalog.names()

    def has_tenant(self, name: str) -> bool:
        return self.catalog.get(name) is not None

    def drop_tenant(self, name: str) -> None:
        """Delete a tenant, durably and totally: its vectors and documents (in every
        collection), the grants it gave and received, its API keys, its cache entries,
        policies and classifier examples. Its id is never reused."""
        with self._write_lock:
            self._handoff.check_write(name)
            rec = self.catalog.tenant(name)
            self.cache.drop_tenant(_cache_key(rec.id))  # first: a crash after leaves no orphans
            plans = []
            for c in self._collections.values():
                if c.index.has_tenant(rec.id):
                    plans.append((c, c.index.received(rec.id)))

            def txn_fn(txn: Any) -> tuple[int, list[TenantRecord]]:
                seq = 0
                for c, received in plans:
                    self.store.delete_owner(txn, c.info.id, rec.id)
                    for owner, ids in received:
                        self.store.set_access(
                            txn, c.info.id, int(owner), ids, rec.id, granted=False
                        )
                    seq = self.store.log_op(txn, OP_DROP_TENANT, c.info.id, rec.id, _NO_IDS)
                quota.forget_tenant(self.store, txn, rec.id)
                changed = self.catalog.delete(txn, rec)
                dropped_keys.extend(self.keys.revoke_tenant(name, txn))
                return seq, changed

            dropped_keys: list[str] = []
            seq, changed = self.store.write(txn_fn, frees=True)
            self.keys.forget(dropped_keys)
            self.catalog.forget(rec)
            self.catalog.apply(*changed)
            for c, _ in plans:
                with c.lock.write_lock():
                    c.index.drop_tenant(rec.id)
                    c.note_write(seq)

    def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        """Let `tenant`'s key grant its vectors to `with_tenant` (admin; `allowed=False`
        withdraws it: grants already given stay until revoked)."""
        with self._write_lock:
            self._handoff.check_write(tenant)
            rec = self.catalog.tenant(check_name(tenant, "tenant"))
            other = self.catalog.tenant(check_name(with_tenant, "tenant"))
            share = rec.share_with | {other.id} if allowed else rec.share_with - {other.id}
            new = dataclasses.replace(rec, share_with=share)
            self.store.write(lambda txn: self.catalog.put(txn, new))
            self.catalog.apply(new)

    def sharing(self, tenant: str) -> list[str]:
        """The tenants `tenant` may grant to."""
        rec = self.catalog.tenant(tenant)
        return sorted(self.catalog.name_of(t) for t in rec.share_with)

    def tenant_seq(self, tenant: str) -> int:
        """The tenant's own write counter (what a tenant key sees as `seq`)."""
        return self.catalog.tenant(tenant).seq

    def issue_key(self, tenant: str | None, description: str = "") -> IssuedKey:
        """A new key for the existing `tenant` (None: an admin key)."""
        with self._write_lock:  # not while the tenant is being dropped
            self._handoff.check_write(tenant)
            if tenant is not None:
                self._tenant_id(tenant)
            info, secret = self.keys.issue(tenant, _check_description(description))
        return IssuedKey(info.key_id, secret)

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        if tenant is not None:
            self._tenant_id(tenant)
        return self.keys.list_keys(tenant)

    def revoke_key(self, key_id: str) -> None:
        with self._write_lock:
            self._handoff.check_write(
                *(k.tenant for k in self.keys.list_keys() if k.key_id == key_id)
            )
            self.keys.revoke(key_id)

    def rotate_key(self, key_id: str) -> IssuedKey:
        with self._write_lock:
            self._handoff.check_write(
                *(k.tenant for k in self.keys.list_keys() if k.key_id == key_id)
            )
            info, secret = self.keys.rotate(key_id)
        return IssuedKey(info.key_id, secret)


def _check_description(text: Any) -> str:
    if not isinstance(text, str) or len(text) > 1024:
        raise InvalidArgument(f"expected a description of at most 1024 characters, got {text!r}")
    return text
