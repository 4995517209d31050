"""Database: the one object the server and the benchmark adapters talk to.

Every write is validated, then committed in one durable LMDB transaction (with its entry in
the operation log), then applied to the in-memory index, then acknowledged with its write
sequence number. Start-up loads each collection's latest index snapshot and replays the
writes logged after it; snapshots are taken in the background.

>>> db = Database(DatabaseConfig(data_dir="/tmp/curator-doc"))      # doctest: +SKIP
>>> db.create_tenant("acme"); db.create_collection("docs", dim=384, metric="cosine")
>>> db.upsert("docs", ids, vectors, documents=["first", "second"], tenant="acme")
>>> hits = db.search("docs", queries, k=10, tenant="acme", with_documents=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curator import __version__
from curator.auth import KeyRing
from curator.cache.config import CacheConfig
from curator.cache.facade import CacheFacade
from curator.cache.semantic_cache import SemanticCache
from curator.config import DatabaseConfig, IndexConfig, Metric, SearchParams
from curator.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from curator.results import (
    CollectionInfo,
    IssuedKey,
    KeyInfo,
    Records,
    SearchResult,
    ServerInfo,
    WriteResult,
)
from curator.startup_log import StartupLog
from curator.storage import documents as docs_codec
from curator.storage import files, quota, tenant_moves
from curator.storage.catalog import Catalog, TenantRecord
from curator.storage.collection import Collection
from curator.storage.collection import CollectionInfo as CollectionRecord
from curator.storage.dir_lock import DirLock
from curator.storage.documents import Document
from curator.storage.handoff import Handoff
from curator.storage.snapshotter import Snapshotter
from curator.storage.store import OP_DELETE, OP_DROP_TENANT, OP_GRANT, OP_REVOKE, OP_UPSERT, Store
from curator.storage.trainer import Trainer
from curator.validation import as_ids, check_k, check_name, prepare_vectors

__all__ = ["Database"]

log = logging.getLogger(__name__)

_BACKUP_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# Response bytes per hit on the wire: id (varint, <= 10) + distance (4) + owner index (varint,
# <= 5), rounded up; with documents, a document message's framing besides its payload.
_HIT_BYTES = 24
_DOC_BYTES = 8
_DOC_CHUNK = 16  # documents fetched per step of the response budget


class Database(CacheFacade):
    """Collections of vectors, tenants and their access lists, and the semantic cache
    (`cache_*` methods, curator/cache/facade.py), durable in LMDB.

    The acting `tenant` of a call is the principal: it owns what it upserts, may read what it
    owns or was granted, and may delete, grant and revoke only what it owns. `tenant=None`
    means the admin. Vector ids are scoped per owner: calls that name ids take the `owner`
    whose ids they are (default: the acting tenant; the admin must name one). Thread-safe:
    searches run in parallel; writes are serialised, and every name a write depends on is
    resolved after it holds the writer lock, so a concurrent drop can never be half-seen.
    One writer process per data directory (`<data_dir>/LOCK`).
    Implements curator.api.CuratorAPI, like the client SDK.
    """

    def __init__(
        self,
        config: DatabaseConfig | None = None,
        *,
        readonly: bool = False,
        background: bool = True,
        cache_config: CacheConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """cache_config: the semantic cache's settings; clock: its time source (tests)."""
        self.config = config or DatabaseConfig()
        cfg = self.config
        self.path = Path(cfg.data_dir)
        self.backup_dir = self.path / "backups"  # where backup(name) writes; the server's flag
        self._opened = time.monotonic()
        stages = StartupLog(log)
        if not readonly:
            files.private_dir(self.path)
        self._dir_lock = None if readonly else DirLock(self.path)
        try:
            self.store = Store(
                self.path / "lmdb",
                map_size=cfg.map_size,
                max_map_size=cfg.max_map_size or None,
                sync=cfg.sync,
                readonly=readonly,
                reserve=cfg.write_reserve_bytes,
            )
        except BaseException:
            self._release_dir()
            raise
        try:
            self._open(cfg, readonly, background, cache_config, clock, stages)
        except BaseException:
            self.store.close()
            self._release_dir()
            raise

    def _open(
        self,
        cfg: DatabaseConfig,
        readonly: bool,
        background: bool,
        cache_config: CacheConfig | None,
        clock: Callable[[], float],
        stages: StartupLog,
    ) -> None:
        self._snap_dir = self.path / "snapshots"
        if not readonly:
            files.private_dir(self._snap_dir)
            files.private_tree(self.path)  # 0700 / 0600, also what older versions left
        self._write_lock = threading.RLock()  # one writer at a time, database-wide
        stages.done("open LMDB", str(self.path / "lmdb"))
        self.catalog = Catalog(self.store)
        self._handoff = Handoff(self.store)  # frozen / moved tenants (tenant moves)
        with self.store.read() as txn:
            colls = self.store.all_json(txn, "collections")
        self.keys = KeyRing(self.store)
        self._collections: dict[str, Collection] = {}
        tids = self.catalog.ids()
        for name, d in colls.items():
            info = CollectionRecord.from_json(name, d)
            self._collections[name] = Collection.open(self.store, info, self._snap_dir, tids)
        for c in self._collections.values():
            c.index.auto_train = False  # trained off the write path, by the trainer
        stages.done("load collections", f"{len(self._collections)} collections")
        self._snapshots = Snapshotter(
            self.store, self._snap_dir, self._collections, self._write_lock, cfg
        )
        self._background = background and not readonly
        self._trainer = Trainer(self.store, self._collections, self._write_lock, self.catalog.ids)
        self.cache = SemanticCache(
            self.store,
            cache_config,
            clock=clock,
            known_tenants={_cache_key(t) for t in tids},
            background=background and not readonly,
            graph_dir=self.path / "cache-graphs",
        )
        stages.done("cache rebuild")
        self._closed = False
        if self._background:
            self._snapshots.start()
            self._trainer.start()

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self, snapshot: bool = True) -> None:
        """Stop background work, snapshot dirty collections (faster next start), close LMDB."""
        if self._closed:
            return
        self._closed = True
        self._trainer.stop()
        self._snapshots.stop()
        self.cache.close()
        if snapshot and not self.store.readonly:
            for c in list(self._collections.values()):
                if c.writes_since_snapshot:
                    self._snapshots.take(c)
        self.store.close()
        self._release_dir()

    def _release_dir(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tenants --------------------------------------------------------------------------------
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

    # -- collections ----------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = Metric.L2,
        config: IndexConfig | None = None,
    ) -> CollectionInfo:
        name = check_name(name, "collection")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise InvalidArgument(f"expected dim an integer in [1, 65536], got {dim!r}")
        metric = Metric.parse(metric)
        config = config or IndexConfig()
        with self._write_lock:
            if name in self._collections:
                raise AlreadyExists(f"expected a new collection name, got existing {name!r}")

            def txn_fn(txn: Any) -> CollectionRecord:
                cid = self.store.next_counter(txn, b"next_collection_id")
                info = CollectionRecord(name, cid, dim, metric, config)
                self.store.put_json(txn, "collections", name, info.to_json())
                return info

            info = self.store.write(txn_fn)
            with self.store.read() as txn:
                seq = self.store.seq(txn)
            index = _new_index(info)
            index.auto_train = False
            self._collections[name] = Collection(info, index, seq)
        return self.describe_collection(name)

    def list_collections(self) -> list[str]:
        return sorted(self._collections)

    def describe_collection(self, name: str) -> CollectionInfo:
        c = self._collection(name)
        with c.lock.read_lock():
            return CollectionInfo(
                name=name,
                dim=c.info.dim,
                metric=c.info.metric.value,
                index=c.info.config,
                vectors=len(c.index),
                tenants=len(c.index.tenants()),
                trained=c.index.is_trained,
                seq=c.applied_seq,
                memory=c.index.memory_usage(),
                quarantined=c.quarantined,
            )

    def snapshot_seq(self, name: str) -> int:
        """The write sequence the collection's latest index snapshot reflects (0: none)."""
        return self._collection(name).snapshot_seq

    def quarantined(self) -> int:
        """Stored rows start-up could not apply, over every collection (see Collection.open)."""
        return sum(c.quarantined for c in list(self._collections.values()))

    def drop_collection(self, name: str) -> None:
        with self._write_lock:
            c = self._collection(name)

            def txn_fn(txn: Any) -> None:
                quota.release_collection(self.store, txn, c.info.id)
                for db in ("vectors", "documents", "access"):
                    self.store.delete_prefix(txn, db, c.info.id)
                self.store.delete_key(txn, "collections", name)
                self.store.delete_key(txn, "snapshots", str(c.info.id))

            self.store.write(txn_fn, frees=True)
            with c.lock.write_lock():
                del self._collections[name]
            for f in self._snap_dir.glob(f"{c.info.id}-*.npz"):
                f.unlink(missing_ok=True)

    # -- writes --------------------------------------------------------------------------------
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

    def train(self, name: str) -> bool:
        """(Re)train the collection's shared tree now, without blocking its searches or other
        writes (faiss-style bulk load: upsert everything, then train once). Returns False if
        the collection holds fewer than two vectors."""
        return self._trainer.train(self._collection(name))

    @contextlib.contextmanager
    def bulk_load(self, collection: str) -> Iterator[None]:
        """Load, then train once: no automatic training while the block runs, one training
        at its end (faiss-style load / train / add)."""
        c = self._collection(collection)
        c.bulk_loads += 1
        try:
            yield
        finally:
            c.bulk_loads -= 1
        if not c.bulk_loads:
            self._trainer.train(c)

    def _after_write(self, c: Collection) -> None:
        if c.bulk_loads or not c.index.wants_training():
            return
        if self._background:
            self._trainer.notify()
        else:  # deterministic for tests and tools: train now, in the caller's thread only
            self._trainer.train(c, force=False)

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

    # -- reads ----------------------------------------------------------------------------------
    def search(
        self,
        collection: str,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | Sequence[str] | None = None,
        params: SearchParams | None = None,
        with_documents: bool = False,
        with_vectors: bool = False,
        require_all: bool = False,
    ) -> SearchResult:
        """Nearest `k` vectors readable by `tenant` (or by any of several tenants; with
        `require_all`, by both of two tenants: the filter track's AND of two labels) for each
        of `queries` (nq, d). Hits carry their owner (ids are scoped per owner)."""
        c = self._collection(collection)
        if tenant is None:
            raise InvalidArgument("expected tenants to search for (the admin key acts for none)")
        names = [tenant] if isinstance(tenant, str) else list(tenant)
        if not names:
            raise InvalidArgument("expected at least one tenant, got none")
        self._handoff.check_read(*names)
        recs = [self.catalog.tenant(check_name(n, "tenant")) for n in names]
        if require_all and len(recs) != 2:
            raise InvalidArgument(f"expected 2 tenants with require_all, got {len(recs)}")
        k = check_k(k)
        q = prepare_vectors(queries, c.info.dim, c.info.metric is Metric.COSINE, "queries")
        if len(q) > self.config.max_queries:
            raise ResourceExhausted(
                f"expected at most {self.config.max_queries} queries per request, got {len(q)}"
            )
        # Bound the response from the request before any work: nq x k x what is asked for.
        limit = self.config.max_response_bytes
        per_hit = _HIT_BYTES + (_DOC_BYTES if with_documents else 0)
        per_hit += 4 * c.info.dim if with_vectors else 0
        fixed = len(q) * check_k(k) * per_hit
        if fixed > limit:
            raise ResourceExhausted(
                f"expected a response of at most {limit} bytes (max_response_bytes), got "
                f"{len(q)} queries x k={k} x {per_hit} bytes per hit = {fixed} bytes"
            )
        with c.lock.read_lock():
            present = [r.id for r in recs if c.index.has_tenant(r.id)]
            if require_all and len(present) == 2:
                ids, dist, own, _ = c.index.search_and_prepared(present, q, k, params)
            elif present and not require_all:
                ids, dist, own, _ = c.index.search_prepared(present, q, k, params)
            else:  # a tenant with nothing in this collection
                ids, dist, own = _empty(len(q), k)
            keys, which = c.index.hit_owners(own)  # per distinct owner, not per hit
            seq = c.applied_seq
            vectors = c.index.hit_vectors(own) if with_vectors else None
        tids = np.array([-1 if key is None else int(key) for key in keys] + [-1], np.int64)
        owner_ids = tids[which.ravel()]  # which == -1 (padding) picks the trailing -1
        owner_names = np.array([self.catalog.name_of(int(t)) for t in tids[:-1]] + [""], object)
        owners = owner_names[which.ravel()].tolist()
        docs = None
        if with_documents:
            # A running budget: stop as soon as the documents pass what the response may hold,
            # so memory stays bounded by the limit plus one chunk.
            flat: list[bytes | None] = []
            budget = limit - fixed
            want = ids.ravel()
            with self.store.read() as txn:
                for at in range(0, len(want), _DOC_CHUNK):
                    part = slice(at, at + _DOC_CHUNK)
                    chunk = self.store.get_documents(txn, c.info.id, owner_ids[part], want[part])
                    budget -= sum(len(d) for d in chunk if d is not None)
                    if budget < 0:
                        raise ResourceExhausted(
                            f"expected a response of at most {limit} bytes "
                            "(max_response_bytes), got more with the documents of "
                            f"{len(q)} queries x k={k}; ask for fewer hits or no documents"
                        )
                    flat.extend(chunk)
            docs = [
                [docs_codec.decode(d) for d in flat[r * k : (r + 1) * k]] for r in range(len(ids))
            ]
        nq = len(ids)
        return SearchResult(
            ids.view(np.uint64),
            dist,
            docs,
            vectors,
            seq,
            [owners[r * k : (r + 1) * k] for r in range(nq)],
        )

    def get(
        self,
        collection: str,
        ids: Any,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> Records:
        """`owner`'s vectors among `ids` (default owner: the acting tenant) that exist and
        `tenant` may read, in request order (O(log n) per id)."""
        c = self._collection(collection)
        ids = as_ids(ids, unique=False)
        self._check_batch(len(ids))
        self._handoff.check_read(tenant, owner)
        reader = self.catalog.tenant(check_name(tenant, "tenant")) if tenant is not None else None
        if owner is None and reader is None:
            raise InvalidArgument("expected the owner of the ids (the admin acts for none)")
        own = self.catalog.get(check_name(owner, "tenant")) if owner is not None else reader
        with c.lock.read_lock():
            if own is None or not c.index.has_tenant(own.id):
                ids = ids[:0]
            elif reader is not None:
                ids = ids[c.index.can_read(ids, own.id, reader.id)]
            else:
                ids = ids[c.index.contains(ids, owner=own.id)]
            vectors = (
                c.index.get_vectors(ids, owner=own.id)
                if len(ids) and own is not None
                else np.zeros((0, c.info.dim), np.float32)
            )
        name = own.name if own is not None else ""
        with self.store.read() as txn:
            raw = self.store.get_documents(
                txn, c.info.id, np.full(len(ids), own.id if own else -1), ids
            )
        return Records(ids, vectors, [name] * len(ids), [docs_codec.decode(d) for d in raw])

    def count(self, collection: str, *, tenant: str | None = None) -> int:
        c = self._collection(collection)
        with c.lock.read_lock():
            if tenant is None:
                return len(c.index)
            self._handoff.check_read(tenant)
            rec = self.catalog.tenant(tenant)
            return c.index.tenant_size(rec.id) if c.index.has_tenant(rec.id) else 0

    def tenant_seq(self, tenant: str) -> int:
        """The tenant's own write counter (what a tenant key sees as `seq`)."""
        return self.catalog.tenant(tenant).seq

    # -- snapshots and backup ---------------------------------------------------------------------
    def snapshot(self, collection: str) -> int:
        """Write the collection's index snapshot now; returns the sequence it reflects."""
        return self._snapshots.take(self._collection(collection))

    def backup(self, name: str) -> str:
        """`backup_to` the new folder `name` (letters, digits, '-', '_', '.') under
        `backup_dir`; returns its path."""
        if (
            not isinstance(name, str)
            or not name
            or set(name) - _BACKUP_NAME
            or name.startswith(".")
        ):
            raise InvalidArgument(
                f"expected a backup name of letters, digits, '-', '_', '.', got {name!r}"
            )
        dest = Path(self.backup_dir) / name
        self.backup_to(dest)
        return str(dest)

    def backup_to(self, dest: str | os.PathLike[str]) -> None:
        """A consistent copy of the live database in the new folder `dest`, which opens as a
        working database (LMDB's compacting copy, plus the current index snapshots)."""
        self._snapshots.backup(Path(dest))

    def server_info(self) -> ServerInfo:
        """In-process, the principal is the admin and uptime counts from the open."""
        with self.store.read() as txn:
            seq = self.store.seq(txn)
        return ServerInfo(
            version=__version__,
            principal="admin",
            seq=seq,
            collections=len(self._collections),
            tenants=len(self.catalog),
            uptime_seconds=time.monotonic() - self._opened,
        )

    # -- API keys (stored hashed; see curator.auth) ----------------------------------------------
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

    # -- helpers --------------------------------------------------------------------------------
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

    # -- tenant moves (scale-out; logic in curator/storage/tenant_moves.py) -------------------
    def export_tenant(self, name: str, since_seq: int = 0) -> tuple[bytes, int]:
        """A bundle of tenant `name` (since_seq 0: everything it owns; else the state of what
        its writes after since_seq touched) and the sequence it reflects."""
        return tenant_moves.export(self, name, since_seq)

    def import_tenant(self, data: bytes, tenant: str | None = None) -> dict[str, int]:
        """Apply a bundle from `export_tenant` (of `tenant`, if given; idempotent); returns
        counts of changes."""
        return tenant_moves.import_bundle(self, data, tenant)

    def freeze_tenant(self, name: str) -> int:
        """Refuse the tenant's writes (TenantMoving); returns the fence sequence."""
        return tenant_moves.freeze(self, name)

    def unfreeze_tenant(self, name: str) -> None:
        tenant_moves.unfreeze(self, name)

    def mark_moved(self, name: str, node: str, epoch: int) -> None:
        """Persist that the tenant lives on `node` at `epoch` (TenantMoved from now on)."""
        tenant_moves.mark_moved(self, name, node, epoch)

    def drop_moved(self, name: str) -> None:
        """Delete what a moved tenant owns here; its tombstone stays."""
        tenant_moves.drop_moved(self, name)

    def moved_to(self, name: str) -> tuple[str, int] | None:
        """(node, epoch) the tenant moved to, or None if it was not moved away."""
        return self._handoff.moved.get(name)


_NO_IDS = np.empty(0, np.uint64)


def _cache_key(tid: int) -> str:
    return f"#{tid}"


def _new_index(info: CollectionRecord) -> Any:
    from curator.index.curator_index import CuratorIndex

    return CuratorIndex(info.dim, info.metric, info.config)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.full((nq, k), -1, np.int64),
        np.full((nq, k), np.inf, np.float32),
        np.full((nq, k), -1, np.int32),
    )


def _check_description(text: Any) -> str:
    if not isinstance(text, str) or len(text) > 1024:
        raise InvalidArgument(f"expected a description of at most 1024 characters, got {text!r}")
    return text
