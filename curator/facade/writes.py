"""Vector writes on the Database (a mixin): upsert, delete, grant, revoke.

Each write is validated once, then committed in one durable LMDB transaction with its
operation-log entry, then applied to the in-memory index, then acknowledged with its
sequence numbers (database-wide and the tenant's own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curator.config import Metric
from curator.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from curator.facade.base import FacadeBase
from curator.results import (
    WriteResult,
)
from curator.storage import documents as docs_codec
from curator.storage import quota
from curator.storage.catalog import TenantRecord
from curator.storage.collection import Collection
from curator.storage.documents import Document
from curator.storage.store import OP_DELETE, OP_GRANT, OP_REVOKE, OP_UPSERT
from curator.validation import as_ids, check_name, prepare_vectors

__all__ = ["VectorWrites"]


class VectorWrites(FacadeBase):
    def upsert(
        self,
        collection: str,
        ids: Any,
        vectors: Any,
        documents: Sequence[Document] | None = None,
        *,
        tenant: str | None = None,
    ) -> WriteResult:
        """Insert or replace vectors owned by `tenant` (one transaction, all or nothing).
        A replaced vector loses its grants. Every row is validated here, once, before
        anything is committed."""
        if tenant is None:
            raise InvalidArgument("expected a tenant to act as (the admin key acts for none)")
        c = self._collection(collection)
        ids = as_ids(ids)
        self._check_batch(len(ids))
        x = prepare_vectors(vectors, c.info.dim, c.info.metric is Metric.COSINE, "vectors")
        if len(x) != len(ids):
            raise InvalidArgument(
                f"expected one vector per id, got {len(ids)} ids and {len(x)} vectors"
            )
        raw_docs = None
        if documents is not None:
            if len(documents) != len(ids):
                raise InvalidArgument(
                    f"expected one document per id, got {len(documents)} "
                    f"documents for {len(ids)} ids"
                )
            raw_docs = [docs_codec.encode(d, self.config.max_document_bytes) for d in documents]
        with self._write_lock:
            self._handoff.check_write(tenant)
            c = self._collection(collection)
            rec = self.catalog.tenant(tenant)
            if not len(ids):
                return WriteResult(c.applied_seq, 0, rec.seq)
            replaced = (
                ids[c.index.contains(ids, owner=rec.id)] if c.index.has_tenant(rec.id) else ids[:0]
            )
            payload = x.nbytes + sum(len(d or b"") for d in raw_docs or [])
            estimate = payload + 64 * len(ids)

            def txn_fn(txn: Any) -> tuple[int, TenantRecord]:
                limit = self.config.tenant_max_bytes
                quota.charge_upsert(
                    self.store, txn, c.info.id, rec.id, tenant, replaced, payload, limit
                )
                self.store.delete_vectors(txn, c.info.id, rec.id, replaced)
                self.store.put_vectors(txn, c.info.id, rec.id, ids, x, raw_docs)
                seq = self.store.log_op(txn, OP_UPSERT, c.info.id, rec.id, ids)
                return seq, self.catalog.bump(txn, rec)

            seq, new = self.store.write(txn_fn, estimate)
            self.catalog.apply(new)
            with c.lock.write_lock():
                c.index.insert_prepared(ids, x, rec.id)
                c.note_write(seq)
        self._after_write(c)
        return WriteResult(seq, len(ids), new.seq)

    def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult:
        """Delete `owner`'s vectors (default: the acting tenant's; a tenant deletes only its
        own). Ids it does not have are ignored."""
        ids = np.unique(as_ids(ids, unique=False))
        self._check_batch(len(ids))
        with self._write_lock:
            self._handoff.check_write(tenant, owner or tenant)
            c = self._collection(collection)
            actor, own = self._owner_for(tenant, owner, "delete", foreign_ok=False)
            if own is None:  # foreign_ok=False: the owner is the actor or was looked up
                raise Internal("expected the owner of a delete to be known")
            present = c.index.contains(ids, owner=own.id) if c.index.has_tenant(own.id) else None
            ids = ids[present] if present is not None else ids[:0]
            if not len(ids):
                return WriteResult(c.applied_seq, 0, actor.seq if actor else 0)

            def txn_fn(txn: Any) -> tuple[int, TenantRecord | None]:
                quota.release_rows(self.store, txn, c.info.id, own.id, ids)
                self.store.delete_vectors(txn, c.info.id, own.id, ids)
                seq = self.store.log_op(txn, OP_DELETE, c.info.id, own.id, ids)
                return seq, self.catalog.bump(txn, actor) if actor else None

            seq, new = self.store.write(txn_fn, frees=True)
            if new is not None:
                self.catalog.apply(new)
            with c.lock.write_lock():
                c.index.delete(ids, owner=own.id)
                c.note_write(seq)
            return WriteResult(seq, len(ids), new.seq if new else 0)

    def grant(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        """Share `owner`'s vectors (default: the acting tenant's own) with `to_tenant`. A
        tenant may grant only its own vectors, and only to tenants the admin allowed it to
        share with (`allow_sharing`); "not allowed" and "no such tenant" answer the same."""
        return self._set_access(collection, ids, to_tenant, tenant, owner, granted=True)

    def revoke(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        """Take `to_tenant`'s access to `owner`'s vectors away. The owner revokes what it
        granted; a grantee may always drop a share it received (`to_tenant` itself, naming
        the `owner`)."""
        return self._set_access(collection, ids, to_tenant, tenant, owner, granted=False)

    def _set_access(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        tenant: str | None,
        owner: str | None,
        granted: bool,
    ) -> WriteResult:
        ids = np.unique(as_ids(ids, unique=False))
        self._check_batch(len(ids))
        check_name(to_tenant, "tenant")
        with self._write_lock:
            self._handoff.check_write(tenant, owner or tenant)
            c = self._collection(collection)
            drop_share = not granted and tenant is not None and to_tenant == tenant
            what = "grant" if granted else "revoke"
            actor, own = self._owner_for(tenant, owner, what, foreign_ok=drop_share)
            to = self.catalog.get(to_tenant)
            if (
                granted
                and actor is not None
                and (to is None or (to.id not in actor.share_with and to.id != actor.id))
            ):
                raise NotFound(f"expected a tenant you may share with, got {to_tenant!r}")
            if to is None:
                raise NotFound(f"expected a known tenant, got {to_tenant!r}")
            if own is None:  # a grantee naming an unknown owner: as if the ids were unknown
                if not len(ids):
                    return WriteResult(c.applied_seq, 0, actor.seq if actor else 0)
                raise NotFound(f"expected known vector ids, got unknown id {int(ids[0])}")
            idx = c.index
            has = idx.has_tenant(own.id)
            exists = idx.contains(ids, owner=own.id) if has else np.zeros(len(ids), bool)
            if drop_share:  # the grantee sees only what it was granted
                exists &= idx.can_read(ids, own.id, to.id) if has else exists
            if not exists.all():
                raise NotFound(f"expected known vector ids, got unknown id {int(ids[~exists][0])}")
            if to.id == own.id:
                if granted:
                    return WriteResult(c.applied_seq, 0, actor.seq if actor else 0)
                raise FailedPrecondition(
                    f"expected ids not owned by {to_tenant!r}: an owner's "
                    "access cannot be revoked, delete the vector instead"
                )
            readable = idx.can_read(ids, own.id, to.id)
            change = ids[~readable] if granted else ids[readable]
            if not len(change):  # a no-op consumes no sequence number
                return WriteResult(c.applied_seq, 0, actor.seq if actor else 0)

            def txn_fn(txn: Any) -> tuple[int, TenantRecord | None]:
                self.store.set_access(txn, c.info.id, own.id, change, to.id, granted)
                kind = OP_GRANT if granted else OP_REVOKE
                seq = self.store.log_op(txn, kind, c.info.id, own.id, change, to.id)
                return seq, self.catalog.bump(txn, actor) if actor else None

            seq, new = self.store.write(txn_fn)
            if new is not None:
                self.catalog.apply(new)
            with c.lock.write_lock():
                if granted:
                    c.index.grant(change, to.id, owner=own.id)
                else:
                    c.index.revoke(change, to.id, owner=own.id)
                c.note_write(seq)
            return WriteResult(seq, len(change), new.seq if new else 0)

    def _after_write(self, c: Collection) -> None:
        if c.bulk_loads or not c.index.wants_training():
            return
        if self._background:
            self._trainer.notify()
        else:  # deterministic for tests and tools: train now, in the caller's thread only
            self._trainer.train(c, force=False)
