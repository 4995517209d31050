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

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curator.auth import KeyRing
from curator.cache.config import CacheConfig
from curator.cache.facade import CacheFacade
from curator.cache.semantic_cache import SemanticCache
from curator.config import DatabaseConfig, IndexConfig, Metric, SearchParams
from curator.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from curator.results import Records, SearchResult, WriteResult
from curator.storage import documents as docs_codec
from curator.storage import files, quota
from curator.storage.collection import Collection, CollectionInfo
from curator.storage.documents import Document
from curator.storage.snapshotter import Snapshotter
from curator.storage.store import OP_DELETE, OP_DROP_TENANT, OP_GRANT, OP_REVOKE, OP_UPSERT, Store
from curator.validation import as_ids, as_matrix, check_k, check_tenant, check_tenants

__all__ = ["Database"]

log = logging.getLogger(__name__)

_NAME_MAX = 128
# Response bytes per hit on the wire: id (varint, <= 10) + distance (4), rounded up; with
# documents, a document message's framing besides its payload.
_HIT_BYTES = 16
_DOC_BYTES = 8
_DOC_CHUNK = 16  # documents fetched per step of the response budget


class Database(CacheFacade):
    """Collections of vectors, tenants and their access lists, and the semantic cache
    (`cache_*` methods, curator/cache/facade.py), durable in LMDB.

    The acting `tenant` of a call is the principal: it owns what it upserts, may read what it
    owns or was granted, and may delete, grant and revoke only what it owns. `tenant=None`
    means the admin (everything). Thread-safe: searches run in parallel, writes are serialised.
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
        if not readonly:
            files.private_dir(self.path)
        self.store = Store(
            self.path / "lmdb",
            map_size=cfg.map_size,
            max_map_size=cfg.max_map_size or None,
            sync=cfg.sync,
            readonly=readonly,
            reserve=cfg.write_reserve_bytes,
        )
        self._snap_dir = self.path / "snapshots"
        if not readonly:
            files.private_dir(self._snap_dir)
            files.private_tree(self.path)  # 0700 / 0600, also what older versions left
        self._write_lock = threading.RLock()  # one writer at a time, database-wide
        with self.store.read() as txn:
            self._tenants: dict[str, int] = {
                n: d["id"] for n, d in self.store.all_json(txn, "tenants").items()
            }
            colls = self.store.all_json(txn, "collections")
        self.keys = KeyRing(self.store)
        self._collections: dict[str, Collection] = {}
        for name, d in colls.items():
            info = CollectionInfo.from_json(name, d)
            self._collections[name] = Collection.open(
                self.store, info, self._snap_dir, self._tenant_names()
            )
        self._snapshots = Snapshotter(
            self.store, self._snap_dir, self._collections, self._write_lock, cfg
        )
        self.cache = SemanticCache(
            self.store,
            cache_config,
            clock=clock,
            known_tenants=set(self._tenants),
            background=background and not readonly,
            graph_dir=self.path / "cache-graphs",
        )
        self._closed = False
        if background and not readonly:
            self._snapshots.start()
        self.ready = True

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self, snapshot: bool = True) -> None:
        """Stop background work, snapshot dirty collections (faster next start), close LMDB."""
        if self._closed:
            return
        self._closed = True
        self._snapshots.stop()
        self.cache.close()
        if snapshot and not self.store.readonly:
            for c in list(self._collections.values()):
                if c.writes_since_snapshot:
                    self._snapshots.take(c)
        self.store.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tenants --------------------------------------------------------------------------------
    def create_tenant(self, name: str) -> None:
        name = _check_name(check_tenant(name), "tenant")
        with self._write_lock:
            if name in self._tenants:
                raise AlreadyExists(f"expected a new tenant name, got existing {name!r}")

            def txn_fn(txn: Any) -> int:
                tid = self.store.next_counter(txn, b"next_tenant_id")
                self.store.put_json(txn, "tenants", name, {"id": tid, "created": time.time()})
                return tid

            self._tenants[name] = self.store.write(txn_fn)

    def list_tenants(self) -> list[str]:
        return sorted(self._tenants)

    def has_tenant(self, name: str) -> bool:
        return name in self._tenants

    def drop_tenant(self, name: str) -> None:
        """Delete a tenant: its vectors (in every collection), its grants and its cache."""
        tid = self._tenant_id(name)
        with self._write_lock:
            self.cache.drop_tenant(name)  # first: a crash after it leaves no orphan entries
            plans = []
            for c in self._collections.values():
                if name in c.index.tenants():
                    readable = c.index.readable_ids(name)
                    owned = (
                        readable[np.array(c.index.owner_of(readable)) == name]
                        if len(readable)
                        else readable
                    )
                    plans.append((c, owned, np.setdiff1d(readable, owned)))

            def txn_fn(txn: Any) -> int:
                seq = 0
                for c, owned, granted in plans:
                    self.store.delete_vectors(txn, c.info.id, owned)
                    self.store.set_access(txn, c.info.id, granted, tid, granted=False)
                    seq = self.store.log_op(
                        txn, OP_DROP_TENANT, c.info.id, np.concatenate([owned, granted]), tid
                    )
                self.store.delete_key(txn, "tenants", name)
                quota.forget_tenant(self.store, txn, tid)
                dropped_keys.extend(self.keys.revoke_tenant(name, txn))
                return seq

            dropped_keys: list[str] = []
            seq = self.store.write(txn_fn, frees=True)
            self.keys.forget(dropped_keys)
            for c, _, _ in plans:
                with c.lock.write_lock():
                    c.index.drop_tenant(name)
                    c.note_write(seq)
            del self._tenants[name]

    # -- collections ----------------------------------------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = Metric.L2,
        config: IndexConfig | None = None,
    ) -> CollectionInfo:
        name = _check_name(name, "collection")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise InvalidArgument(f"expected dim an integer in [1, 65536], got {dim!r}")
        metric = Metric.parse(metric)
        config = config or IndexConfig()
        with self._write_lock:
            if name in self._collections:
                raise AlreadyExists(f"expected a new collection name, got existing {name!r}")

            def txn_fn(txn: Any) -> CollectionInfo:
                cid = self.store.next_counter(txn, b"next_collection_id")
                info = CollectionInfo(name, cid, dim, metric, config)
                self.store.put_json(txn, "collections", name, info.to_json())
                return info

            info = self.store.write(txn_fn)
            with self.store.read() as txn:
                seq = self.store.seq(txn)
            self._collections[name] = Collection(info, _new_index(info), seq)
            return info

    def list_collections(self) -> list[str]:
        return sorted(self._collections)

    def describe_collection(self, name: str) -> dict[str, Any]:
        c = self._collection(name)
        with c.lock.read_lock():
            return {
                "name": name,
                "dim": c.info.dim,
                "metric": c.info.metric.value,
                "config": c.info.config,
                "vectors": len(c.index),
                "tenants": len(c.index.tenants()),
                "trained": c.index.is_trained,
                "memory": c.index.memory_usage(),
                "seq": c.applied_seq,
                "snapshot_seq": c.snapshot_seq,
            }

    def drop_collection(self, name: str) -> None:
        c = self._collection(name)
        with self._write_lock:

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
        tenant: str,
    ) -> WriteResult:
        """Insert or replace vectors owned by `tenant` (one transaction, all or nothing).
        A replaced vector loses its grants. Returns the write sequence number."""
        c = self._collection(collection)
        tid = self._tenant_id(tenant)
        ids = as_ids(ids)
        self._check_batch(len(ids))
        x = c.index._prepare(vectors, "vectors")
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
        if not len(ids):
            return WriteResult(c.applied_seq, 0)
        with self._write_lock:
            exists = c.index.contains(ids)
            if exists.any():
                owners = c.index.owner_of(ids[exists])
                foreign = [int(i) for i, o in zip(ids[exists], owners, strict=True) if o != tenant]
                if foreign:
                    raise PermissionDenied(
                        f"expected ids owned by {tenant!r} or new, got id "
                        f"{foreign[0]} owned by another tenant"
                    )
            replaced = ids[exists]
            payload = x.nbytes + sum(len(d or b"") for d in raw_docs or [])
            estimate = payload + 64 * len(ids)

            def txn_fn(txn: Any) -> int:
                limit = self.config.tenant_max_bytes
                quota.charge_upsert(
                    self.store, txn, c.info.id, tid, tenant, replaced, payload, limit
                )
                self.store.delete_vectors(txn, c.info.id, replaced)
                self.store.put_vectors(txn, c.info.id, ids, tid, x, raw_docs)
                return self.store.log_op(txn, OP_UPSERT, c.info.id, ids)

            seq = self.store.write(txn_fn, estimate)
            with c.lock.write_lock():
                c.index.insert(ids, x, owner=tenant)
                c.note_write(seq)
            return WriteResult(seq, len(ids))

    def delete(self, collection: str, ids: Any, *, tenant: str | None = None) -> WriteResult:
        """Delete vectors; a tenant deletes only what it owns (other ids are treated as
        absent). Returns (number deleted, write sequence number)."""
        c = self._collection(collection)
        ids = np.unique(as_ids(ids, unique=False))
        self._check_batch(len(ids))
        with self._write_lock:
            ids = ids[c.index.contains(ids)]
            if tenant is not None:
                self._tenant_id(tenant)
                ids = (
                    ids[np.array(c.index.owner_of(ids), dtype=object) == tenant]
                    if len(ids)
                    else ids
                )
            if not len(ids):
                return WriteResult(c.applied_seq, 0)

            def txn_fn(txn: Any) -> int:
                quota.release_rows(self.store, txn, c.info.id, ids)
                self.store.delete_vectors(txn, c.info.id, ids)
                return self.store.log_op(txn, OP_DELETE, c.info.id, ids)

            seq = self.store.write(txn_fn, frees=True)
            with c.lock.write_lock():
                c.index.delete(ids)
                c.note_write(seq)
            return WriteResult(seq, len(ids))

    def grant(
        self, collection: str, ids: Any, to_tenant: str, *, tenant: str | None = None
    ) -> WriteResult:
        """Share vectors (owned by the acting `tenant`) with `to_tenant`."""
        return self._set_access(collection, ids, to_tenant, tenant, granted=True)

    def revoke(
        self, collection: str, ids: Any, to_tenant: str, *, tenant: str | None = None
    ) -> WriteResult:
        return self._set_access(collection, ids, to_tenant, tenant, granted=False)

    def _set_access(
        self, collection: str, ids: Any, to_tenant: str, tenant: str | None, granted: bool
    ) -> WriteResult:
        c = self._collection(collection)
        to_id = self._tenant_id(to_tenant)
        ids = np.unique(as_ids(ids, unique=False))
        self._check_batch(len(ids))
        with self._write_lock:
            self._check_owner(c, ids, tenant)
            owners = np.array(c.index.owner_of(ids), dtype=object)
            if not granted and (owners == to_tenant).any():
                raise FailedPrecondition(
                    f"expected ids not owned by {to_tenant!r}: an owner's "
                    "access cannot be revoked, delete the vector instead"
                )
            change = ids[owners != to_tenant]

            def txn_fn(txn: Any) -> int:
                self.store.set_access(txn, c.info.id, change, to_id, granted)
                return self.store.log_op(
                    txn, OP_GRANT if granted else OP_REVOKE, c.info.id, change, to_id
                )

            seq = self.store.write(txn_fn)
            with c.lock.write_lock():
                if granted:
                    c.index.grant(change, to_tenant)
                elif to_tenant in c.index.tenants() and len(change):
                    c.index.revoke(change, to_tenant)
                c.note_write(seq)
            return WriteResult(seq, len(change))

    # -- reads ----------------------------------------------------------------------------------
    def search(
        self,
        collection: str,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | Sequence[str],
        params: SearchParams | None = None,
        with_documents: bool = False,
        with_vectors: bool = False,
        require_all: bool = False,
    ) -> SearchResult:
        """Nearest `k` vectors readable by `tenant` (or by any of several tenants; with
        `require_all`, by both of two tenants: the filter track's AND of two labels) for each
        of `queries` (nq, d)."""
        c = self._collection(collection)
        names = check_tenants(tenant)
        for n in names:
            self._tenant_id(n)
        if require_all and len(names) != 2:
            raise InvalidArgument(f"expected 2 tenants with require_all, got {len(names)}")
        q = as_matrix(queries, c.info.dim, "queries")
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
            present = [n for n in names if n in c.index._tenant_of]
            if require_all and len(present) == 2:
                ids, dist = c.index.search_and((present[0], present[1]), q, k, params)
            elif present and not require_all:
                ids, dist = c.index.search(present, q, k, params)
            else:  # a tenant with nothing in this collection
                ids, dist = _empty(len(q), check_k(k))
            seq = c.applied_seq
            vectors = None
            if with_vectors:
                vectors = np.zeros((*ids.shape, c.info.dim), np.float32)
                found = ids >= 0
                if found.any():
                    vectors[found] = c.index.get_vectors(ids[found].view(np.uint64))
        docs = None
        if with_documents:
            # A running budget: stop as soon as the documents pass what the response may hold,
            # so memory stays bounded by the limit plus one chunk.
            flat: list[bytes | None] = []
            budget = limit - fixed
            want = ids.ravel()
            with self.store.read() as txn:
                for at in range(0, len(want), _DOC_CHUNK):
                    chunk = self.store.get_documents(txn, c.info.id, want[at : at + _DOC_CHUNK])
                    budget -= sum(len(d) for d in chunk if d is not None)
                    if budget < 0:
                        raise ResourceExhausted(
                            f"expected a response of at most {limit} bytes "
                            "(max_response_bytes), got more with the documents of "
                            f"{len(q)} queries x k={k}; ask for fewer hits or no documents"
                        )
                    flat.extend(chunk)
            k2 = ids.shape[1]
            docs = [
                [docs_codec.decode(d) for d in flat[r * k2 : (r + 1) * k2]] for r in range(len(ids))
            ]
        return SearchResult(ids, dist, docs, vectors, seq)

    def get(self, collection: str, ids: Any, *, tenant: str | None = None) -> Records:
        """The vectors among `ids` that exist and `tenant` may read, in request order."""
        c = self._collection(collection)
        ids = as_ids(ids, unique=False)
        self._check_batch(len(ids))
        with c.lock.read_lock():
            ids = ids[c.index.contains(ids)]
            if tenant is not None:
                self._tenant_id(tenant)
                readable = (
                    c.index.readable_ids(tenant)
                    if tenant in c.index._tenant_of
                    else np.empty(0, np.uint64)
                )
                ids = ids[np.isin(ids, readable)]
            vectors = (
                c.index.get_vectors(ids) if len(ids) else np.zeros((0, c.info.dim), np.float32)
            )
            owners = c.index.owner_of(ids) if len(ids) else []
        with self.store.read() as txn:
            raw = self.store.get_documents(txn, c.info.id, ids.view(np.int64))
        return Records(ids, vectors, owners, [docs_codec.decode(d) for d in raw])

    def count(self, collection: str, *, tenant: str | None = None) -> int:
        c = self._collection(collection)
        with c.lock.read_lock():
            if tenant is None:
                return len(c.index)
            self._tenant_id(tenant)
            return c.index.tenant_size(tenant) if tenant in c.index._tenant_of else 0

    # -- snapshots and backup ---------------------------------------------------------------------
    def snapshot(self, collection: str) -> int:
        """Write the collection's index snapshot now; returns the sequence it reflects."""
        return self._snapshots.take(self._collection(collection))

    def backup(self, dest: str | os.PathLike[str]) -> None:
        """A consistent copy of the live database in the new folder `dest`, which opens as a
        working database (LMDB's compacting copy, plus the current index snapshots)."""
        self._snapshots.backup(Path(dest))

    def stats(self) -> dict[str, Any]:
        with self.store.read() as txn:
            seq = self.store.seq(txn)
        return {
            "seq": seq,
            "collections": len(self._collections),
            "tenants": len(self._tenants),
            **self.store.stats(),
        }

    # -- helpers --------------------------------------------------------------------------------
    def _collection(self, name: str) -> Collection:
        c = self._collections.get(name) if isinstance(name, str) else None
        if c is None:
            raise NotFound(f"expected a known collection, got {name!r}")
        return c

    def _tenant_id(self, name: str) -> int:
        tid = self._tenants.get(check_tenant(name))
        if tid is None:
            raise NotFound(f"expected a known tenant, got {name!r}")
        return tid

    def _tenant_names(self) -> dict[int, str]:
        return {t: n for n, t in self._tenants.items()}

    def _check_batch(self, n: int) -> None:
        if n > self.config.max_batch:
            raise ResourceExhausted(
                f"expected at most {self.config.max_batch} ids per request, got {n}"
            )

    def _check_owner(self, c: Collection, ids: np.ndarray, tenant: str | None) -> None:
        """Every id exists and (for a tenant) is owned by it; an id the tenant cannot read is
        reported exactly like a missing one."""
        present = c.index.contains(ids)
        if tenant is None:
            if not present.all():
                raise NotFound(f"expected known vector ids, got unknown id {int(ids[~present][0])}")
            return
        self._tenant_id(tenant)
        readable = (
            c.index.readable_ids(tenant) if tenant in c.index._tenant_of else np.empty(0, np.uint64)
        )
        visible = present & np.isin(ids, readable)
        if not visible.all():
            raise NotFound(f"expected known vector ids, got unknown id {int(ids[~visible][0])}")
        owners = c.index.owner_of(ids)
        foreign = [int(i) for i, o in zip(ids, owners, strict=True) if o != tenant]
        if foreign:
            raise PermissionDenied(
                f"expected ids owned by {tenant!r}, got id {foreign[0]} "
                "shared with it by another tenant"
            )


def _new_index(info: CollectionInfo) -> Any:
    from curator.index.curator_index import CuratorIndex

    return CuratorIndex(info.dim, info.metric, info.config)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidArgument(
            f"expected a {what} name of 1..{_NAME_MAX} printable characters, got {name!r}"
        )
    return name
