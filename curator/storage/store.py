"""LMDB storage: one environment per data directory, one named sub-database per record kind.

Every transaction is a `with` block in this module. Write transactions are committed durably
(fsync) unless the store was opened with `sync=False` (faster, but the last writes before a
power loss or kernel crash may be lost; a killed process loses nothing either way). The map
grows before it fills; a configured `max_map_size` (or a full disk) turns into
ResourceExhausted, and the write is not applied.

Full store: every storage-full condition (the map at `max_map_size`, ENOSPC, and EIO on
commit or sync, which is what a full tmpfs reports) is ResourceExhausted. Writes that free
space (deletes, drops, cache invalidations: `write(..., frees=True)`) must keep working on a
full store, so ordinary writes leave `reserve` bytes free: in the map (they may grow it only to
`max_map_size - reserve`) and on disk (the data file is allocated `reserve` bytes past the
used pages before an ordinary write; a freeing write may use that allocation without new
blocks).

Keys are big-endian so that LMDB's byte order is numeric order. Vector ids are scoped per
owner: a vector's identity is (collection, owner tenant id, id).
  vectors    coll u32 | owner u32 | id u64            -> float32[d]
  documents  coll u32 | owner u32 | id u64            -> payload bytes
  access     coll u32 | owner u32 | id u64 | tenant   -> b""   (grants besides the owner)
  oplog      seq u64  -> kind u8 | coll u32 | owner u32 | tenant u32 | ids u64[]
  quarantine sub-database name \x00 original key      -> original value (rows start-up
             could not apply; kept for inspection, never read back)
  cache      entry id u64                -> cache entry record (curator/cache/entry.py)
  cache_policies / cache_examples: tenant \x1f category -> JSON / classifier centroid sums
  collections / tenants / api_keys / snapshots: name -> JSON (tenants: numeric id, never reused)
  meta       b"seq", b"format_version", counters
Format 1 (ids global per collection) is refused with a message saying so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import fasteners
import lmdb
import numpy as np

from curator.errors import FailedPrecondition, Internal, ResourceExhausted
from curator.storage.files import FILE_MODE, private_dir

__all__ = ["OP_DELETE", "OP_DROP_TENANT", "OP_GRANT", "OP_REVOKE", "OP_UPSERT", "Store"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
SUBDBS = (
    "meta",
    "collections",
    "tenants",
    "api_keys",
    "vectors",
    "documents",
    "access",
    "cache",
    "cache_policies",
    "cache_examples",
    "snapshots",
    "oplog",
    "quarantine",
)

OP_UPSERT, OP_DELETE, OP_GRANT, OP_REVOKE, OP_DROP_TENANT = 1, 2, 3, 4, 5

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_VKEY = struct.Struct(">IIQ")
_AKEY = struct.Struct(">IIQI")
_OPHEAD = struct.Struct(">BIII")
_OWNER = struct.Struct(">II")

T = TypeVar("T")


def _is_full(e: BaseException) -> bool:
    """Is `e` a storage-full condition? A full tmpfs makes LMDB's commit fail with EIO."""
    code = getattr(e, "errno", None)
    text = str(e)
    return (
        isinstance(e, lmdb.MapFullError | lmdb.DiskError)
        or code in (errno.ENOSPC, errno.EIO, errno.EDQUOT)
        or "No space" in text
        or "Input/output error" in text
        or "quota exceeded" in text.lower()
    )


class Store:
    """The LMDB environment of one data directory."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = 64 << 20,
        max_map_size: int | None = None,
        sync: bool = True,
        readonly: bool = False,
        max_readers: int = 1024,
        reserve: int = 8 << 20,
    ) -> None:
        """reserve: bytes ordinary writes leave free for writes that free space (at most an
        eighth of max_map_size)."""
        self.path = Path(path)
        self.readonly = readonly
        self.max_map_size = max_map_size
        self.reserve = reserve if max_map_size is None else min(reserve, max_map_size // 8)
        self._allocated = 0  # bytes of the data file known to be allocated on disk
        if not readonly:
            private_dir(self.path)
        if max_map_size is not None:
            map_size = min(map_size, max_map_size - self.reserve)
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(SUBDBS) + 2,
                max_readers=max_readers,
                sync=sync,
                metasync=sync,
                readonly=readonly,
                lock=True,
                subdir=True,
                readahead=False,
                mode=FILE_MODE,
            )
        except lmdb.Error as e:
            raise FailedPrecondition(
                f"expected an openable data directory at {path}, got {e}"
            ) from e
        # Resizing the map needs every transaction of this process closed: readers and
        # writers hold the shared side, a resize takes the exclusive side.
        self._resize = fasteners.ReaderWriterLock()
        self._write_mutex = threading.Lock()
        if readonly:
            self.db = {name: self.env.open_db(name.encode(), create=False) for name in SUBDBS}
        else:
            with self.env.begin(write=True) as txn:
                self.db = {name: self.env.open_db(name.encode(), txn=txn) for name in SUBDBS}
                version = txn.get(b"format_version", db=self.db["meta"])
                if version is None:
                    txn.put(b"format_version", _U32.pack(FORMAT_VERSION), db=self.db["meta"])
                elif _U32.unpack(version)[0] != FORMAT_VERSION:
                    found = _U32.unpack(version)[0]
                    raise FailedPrecondition(
                        f"expected storage format {FORMAT_VERSION}, got {found} at {path}"
                        + (
                            " (format 1 kept vector ids global per collection; this release "
                            "scopes them per owner: export the data with the release that wrote "
                            "it and import it into a new data directory)"
                            if found == 1
                            else ""
                        )
                    )

    def close(self) -> None:
        with self._resize.write_lock():
            self.env.close()

    # -- transactions ---------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction (a consistent snapshot of the store)."""
        with self._resize.read_lock(), self.env.begin(write=False, buffers=False) as txn:
            yield txn

    def write(
        self, fn: Callable[[lmdb.Transaction], T], estimate: int = 0, *, frees: bool = False
    ) -> T:
        """Run `fn(txn)` in one durable write transaction and return its result. `estimate`
        is the bytes the write adds; the map is grown first if it might not fit, and once
        more (the transaction re-run) if LMDB still reports it full. `frees`: the write
        frees space (a delete or drop) and may use the reserve. A full store raises
        ResourceExhausted and applies nothing."""
        if self.readonly:
            raise FailedPrecondition("expected a writable database, it was opened read-only")
        with self._write_mutex:
            try:
                self._ensure_room(estimate, frees)
                for attempt in range(2):
                    try:
                        with self._resize.read_lock(), self.env.begin(write=True) as txn:
                            return fn(txn)
                    except lmdb.MapFullError:
                        if attempt:
                            raise ResourceExhausted(self._full_message()) from None
                        self._grow(self.env.info()["map_size"] * 2, frees)
            except (lmdb.Error, OSError) as e:
                if not _is_full(e):
                    raise
                raise ResourceExhausted(
                    f"expected free disk space for the store, got {e} (free space, or delete "
                    "data: deletes and drops keep working)"
                ) from e
            finally:
                if frees:
                    self._shrink_to_cap()
        raise Internal("unreachable")  # pragma: no cover

    def _used(self) -> int:
        info = self.env.info()
        return (info["last_pgno"] + 1) * self.env.stat()["psize"]

    def _cap(self, frees: bool) -> int | None:
        """The largest map a write may use: ordinary writes leave the reserve."""
        if self.max_map_size is None:
            return None
        return self.max_map_size if frees else self.max_map_size - self.reserve

    def _full_message(self) -> str:
        return (
            f"expected room in the store, got it full at its cap of {self.max_map_size} bytes "
            f"(max_map_size, {self.reserve} of them kept for deletes and drops); delete data "
            "or raise max_map_size"
        )

    def _ensure_room(self, estimate: int, frees: bool) -> None:
        size = self.env.info()["map_size"]
        used = self._used()
        need = used + 2 * estimate + (1 << 20)
        cap = self._cap(frees)
        if need > size * 0.8 and (cap is None or size < cap):
            self._grow(max(size * 2, int(need * 1.5)), frees)
        # Keep `reserve` bytes writable on disk past what this write may add: free pages
        # inside the file or blocks allocated past its used pages.
        want = 2 * estimate + self.reserve
        if not frees and self.reserve and used + want > self._allocated:
            live = self._live()
            if live + want > self._allocated:
                self._allocate(max(used, live + want))

    def _live(self) -> int:
        """Bytes of the pages in use (the used pages less LMDB's free list)."""
        with self._resize.read_lock(), self.env.begin() as txn:
            stats = [self.env.stat()] + [txn.stat(db) for db in self.db.values()]
        pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
        return (pages + 2) * stats[0]["psize"]  # + the two meta pages

    def _allocate(self, upto: int) -> None:
        """Make sure the data file has disk blocks up to `upto` bytes (ENOSPC if not)."""
        cap = self._cap(True)
        upto += self.reserve // 2  # ahead of need: one call per half reserve of growth
        upto = min(upto, self.env.info()["map_size"] if cap is None else cap)
        if upto <= self._allocated:
            return
        fd = os.open(self.path / "data.mdb", os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, upto)
        finally:
            os.close(fd)
        self._allocated = upto

    def _grow(self, new_size: int, frees: bool = False) -> None:
        size = self.env.info()["map_size"]
        cap = self._cap(frees)
        if cap is not None:
            if size >= cap:
                raise ResourceExhausted(self._full_message())
            new_size = min(new_size, cap)
        with self._resize.write_lock():
            self.env.set_mapsize(new_size)
        log.info("grew the LMDB map from %d to %d bytes", size, new_size)

    def _shrink_to_cap(self) -> None:
        """After a freeing write used the reserve, give it back (LMDB keeps the map at least
        as large as its used pages)."""
        cap = self._cap(False)
        if cap is not None and self.env.info()["map_size"] > cap:
            with self._resize.write_lock():
                self.env.set_mapsize(cap)

    # -- small records ----------------------------------------------------------------------
    def next_counter(self, txn: lmdb.Transaction, name: bytes) -> int:
        raw = txn.get(name, db=self.db["meta"])
        value = _U64.unpack(raw)[0] + 1 if raw else 1
        txn.put(name, _U64.pack(value), db=self.db["meta"])
        return value

    def raise_counter(self, txn: lmdb.Transaction, name: bytes, value: int) -> None:
        """Make the counter at least `value` (the next `next_counter` returns more)."""
        raw = txn.get(name, db=self.db["meta"])
        if not raw or _U64.unpack(raw)[0] < value:
            txn.put(name, _U64.pack(value), db=self.db["meta"])

    def seq(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq", db=self.db["meta"])
        return _U64.unpack(raw)[0] if raw else 0

    def put_json(self, txn: lmdb.Transaction, db: str, key: str, value: Any) -> None:
        txn.put(key.encode(), json.dumps(value).encode(), db=self.db[db])

    def get_json(self, txn: lmdb.Transaction, db: str, key: str) -> Any:
        raw = txn.get(key.encode(), db=self.db[db])
        return None if raw is None else json.loads(bytes(raw))

    def all_json(self, txn: lmdb.Transaction, db: str) -> dict[str, Any]:
        with txn.cursor(db=self.db[db]) as cur:
            return {bytes(k).decode(): json.loads(bytes(v)) for k, v in cur}

    def delete_key(self, txn: lmdb.Transaction, db: str, key: str) -> bool:
        return bool(txn.delete(key.encode(), db=self.db[db]))

    def put_raw(self, txn: lmdb.Transaction, db: str, key: bytes, value: bytes) -> None:
        txn.put(key, value, db=self.db[db])

    def get_raw(self, txn: lmdb.Transaction, db: str, key: bytes) -> bytes | None:
        raw = txn.get(key, db=self.db[db])
        return None if raw is None else bytes(raw)

    def delete_raw(self, txn: lmdb.Transaction, db: str, key: bytes) -> bool:
        return bool(txn.delete(key, db=self.db[db]))

    def scan_raw(self, txn: lmdb.Transaction, db: str) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of a sub-database, in key order."""
        with txn.cursor(db=self.db[db]) as cur:
            for k, v in cur:
                yield bytes(k), bytes(v)

    # -- vectors, documents, access ------------------------------------------------------------
    def put_vectors(
        self,
        txn: lmdb.Transaction,
        coll: int,
        owner: int,
        ids: np.ndarray,
        x: np.ndarray,
        docs: list[bytes | None] | None,
    ) -> None:
        keys = [_VKEY.pack(coll, owner, vid) for vid in ids.tolist()]
        with txn.cursor(db=self.db["vectors"]) as cur:
            cur.putmulti(zip(keys, (row.tobytes() for row in x), strict=True))
        ddb = self.db["documents"]
        for key, doc in zip(keys, docs or [None] * len(keys), strict=True):
            if doc is not None:
                txn.put(key, doc, db=ddb)
            else:
                txn.delete(key, db=ddb)

    def get_vectors(
        self, txn: lmdb.Transaction, coll: int, owner: int, ids: np.ndarray, dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(found (n,) bool, vectors (n, dim) float32) of `owner`'s ids."""
        n = len(ids)
        found = np.zeros(n, bool)
        x = np.zeros((n, dim), np.float32)
        vdb = self.db["vectors"]
        for i, vid in enumerate(ids.tolist()):
            raw = txn.get(_VKEY.pack(coll, owner, vid), db=vdb)
            if raw is not None:
                found[i] = True
                x[i] = np.frombuffer(raw, np.float32)
        return found, x

    def get_documents(
        self, txn: lmdb.Transaction, coll: int, owners: np.ndarray, ids: np.ndarray
    ) -> list[bytes | None]:
        """Documents of (owner, id) pairs; None where absent (or owner < 0: padding)."""
        ddb = self.db["documents"]
        out: list[bytes | None] = []
        for o, v in zip(
            np.asarray(owners, np.int64).tolist(), ids.astype(np.uint64).tolist(), strict=True
        ):
            raw = txn.get(_VKEY.pack(coll, o, v), db=ddb) if o >= 0 else None
            out.append(None if raw is None else bytes(raw))
        return out

    def delete_vectors(self, txn: lmdb.Transaction, coll: int, owner: int, ids: np.ndarray) -> None:
        vdb, ddb, adb = self.db["vectors"], self.db["documents"], self.db["access"]
        with txn.cursor(db=adb) as cur:
            for vid in ids.tolist():
                key = _VKEY.pack(coll, owner, vid)
                txn.delete(key, db=vdb)
                txn.delete(key, db=ddb)
                # Drop every grant of the vector: keys coll|owner|id|* are contiguous.
                if cur.set_range(key):
                    while cur.key()[: _VKEY.size] == key and cur.delete():
                        pass

    def row_sizes(
        self,
        txn: lmdb.Transaction,
        coll: int,
        owner: int | None = None,
        ids: np.ndarray | None = None,
    ) -> dict[int, int]:
        """Bytes of vectors plus documents per owner, of `owner`'s `ids` (those present) or
        of the whole collection (owner and ids None)."""
        vdb, ddb = self.db["vectors"], self.db["documents"]
        rows: list[tuple[bytes, int, int]] = []  # (key, owner, vector bytes)
        if ids is None or owner is None:
            docs = {k: len(v) for k, v in self._scan_prefix(txn, ddb, coll)}
            for k, row in self._scan_prefix(txn, vdb, coll):
                rows.append((k, _VKEY.unpack(k)[1], len(row)))
        else:
            keys = [_VKEY.pack(coll, owner, vid) for vid in np.asarray(ids).tolist()]
            docs = {k: len(d) for k in keys if (d := txn.get(k, db=ddb)) is not None}
            for k in keys:
                v = txn.get(k, db=vdb)
                if v is not None:
                    rows.append((k, owner, len(v)))
        out: dict[int, int] = {}
        for k, o, n in rows:
            out[o] = out.get(o, 0) + n + docs.get(k, 0)
        return out

    def _scan_prefix(
        self, txn: lmdb.Transaction, db: Any, coll: int
    ) -> Iterator[tuple[bytes, bytes]]:
        prefix = _U32.pack(coll)
        with txn.cursor(db=db) as cur:
            if cur.set_range(prefix):
                for k, v in cur:
                    if k[:4] != prefix:
                        break
                    yield bytes(k), bytes(v)

    def scan_owner(
        self, txn: lmdb.Transaction, db: str, coll: int, owner: int
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every row of `owner` in a collection's `db` (vectors, documents,
        access), in key order: the key's id (and grantee) follow coll | owner."""
        prefix = _OWNER.pack(coll, owner)
        with txn.cursor(db=self.db[db]) as cur:
            if cur.set_range(prefix):
                for k, v in cur:
                    if k[: _OWNER.size] != prefix:
                        break
                    yield bytes(k), bytes(v)

    def first_op(self, txn: lmdb.Transaction) -> int:
        """The sequence of the oldest logged operation still kept (0: the log is empty)."""
        with txn.cursor(db=self.db["oplog"]) as cur:
            return _U64.unpack(cur.key())[0] if cur.first() else 0

    def delete_owner(self, txn: lmdb.Transaction, coll: int, owner: int) -> None:
        """Delete every vector, document and grant of `owner` in a collection."""
        for db in ("vectors", "documents", "access"):
            self._delete_prefix_bytes(txn, db, _OWNER.pack(coll, owner))

    def ids_after(
        self, txn: lmdb.Transaction, coll: int, owner: int, after: int, limit: int
    ) -> np.ndarray:
        """Up to `limit` of `owner`'s ids above `after` (-1: from the first), ascending:
        one cursor seek, then `limit` steps (keys are big-endian, so key order is id order)."""
        prefix = _OWNER.pack(coll, owner)
        out: list[int] = []
        with txn.cursor(db=self.db["vectors"]) as cur:
            if cur.set_range(_VKEY.pack(coll, owner, after + 1) if after >= 0 else prefix):
                for k in cur.iternext(values=False):
                    if len(out) >= limit or k[: _OWNER.size] != prefix:
                        break
                    out.append(_VKEY.unpack(k)[2])
        return np.array(out, np.uint64)

    def grants_of(self, txn: lmdb.Transaction, coll: int, owner: int, vid: int) -> list[int]:
        key = _VKEY.pack(coll, owner, vid)
        out = []
        with txn.cursor(db=self.db["access"]) as cur:
            if cur.set_range(key):
                for k in cur.iternext(values=False):
                    if k[: _VKEY.size] != key:
                        break
                    out.append(_AKEY.unpack(k)[3])
        return out

    def set_access(
        self,
        txn: lmdb.Transaction,
        coll: int,
        owner: int,
        ids: np.ndarray,
        tenant: int,
        granted: bool,
    ) -> None:
        adb = self.db["access"]
        for vid in ids.tolist():
            key = _AKEY.pack(coll, owner, vid, tenant)
            if granted:
                txn.put(key, b"", db=adb)
            else:
                txn.delete(key, db=adb)

    def scan_vectors(
        self, txn: lmdb.Transaction, coll: int, dim: int
    ) -> Iterator[tuple[int, int, bytes]]:
        """(owner, id, raw vector bytes) of every vector of a collection, in key order."""
        prefix = _U32.pack(coll)
        with txn.cursor(db=self.db["vectors"]) as cur:
            if not cur.set_range(prefix):
                return
            for k, v in cur:
                if k[:4] != prefix:
                    break
                _, owner, vid = _VKEY.unpack(k)
                yield owner, vid, bytes(v)

    def scan_access(self, txn: lmdb.Transaction, coll: int) -> Iterator[tuple[int, int, int]]:
        """(owner, id, tenant) of every grant in a collection."""
        prefix = _U32.pack(coll)
        with txn.cursor(db=self.db["access"]) as cur:
            if not cur.set_range(prefix):
                return
            for k in cur.iternext(values=False):
                if k[:4] != prefix:
                    break
                _, owner, vid, t = _AKEY.unpack(k)
                yield owner, vid, t

    def quarantine(
        self, txn: lmdb.Transaction, db: str, coll: int, owner: int, vid: int, tenant: int = -1
    ) -> None:
        """Move one stored row that start-up cannot apply out of `db` into `quarantine`."""
        key = _VKEY.pack(coll, owner, vid) if tenant < 0 else _AKEY.pack(coll, owner, vid, tenant)
        raw = txn.get(key, db=self.db[db])
        if raw is not None:
            txn.put(db.encode() + b"\x00" + key, bytes(raw), db=self.db["quarantine"])
            txn.delete(key, db=self.db[db])
            if db == "vectors":
                doc = txn.get(key, db=self.db["documents"])
                if doc is not None:
                    txn.put(b"documents\x00" + key, bytes(doc), db=self.db["quarantine"])
                    txn.delete(key, db=self.db["documents"])

    def count_prefix(self, txn: lmdb.Transaction, db: str, coll: int) -> int:
        prefix = _U32.pack(coll)
        n = 0
        with txn.cursor(db=self.db[db]) as cur:
            if cur.set_range(prefix):
                for k in cur.iternext(values=False):
                    if k[:4] != prefix:
                        break
                    n += 1
        return n

    def delete_prefix(self, txn: lmdb.Transaction, db: str, coll: int) -> None:
        self._delete_prefix_bytes(txn, db, _U32.pack(coll))

    def _delete_prefix_bytes(self, txn: lmdb.Transaction, db: str, prefix: bytes) -> None:
        n = len(prefix)
        with txn.cursor(db=self.db[db]) as cur:
            if cur.set_range(prefix):
                while cur.key()[:n] == prefix and cur.delete():
                    pass

    # -- the operation log ------------------------------------------------------------------
    def log_op(
        self,
        txn: lmdb.Transaction,
        kind: int,
        coll: int,
        owner: int,
        ids: np.ndarray,
        tenant: int = 0,
    ) -> int:
        """Append an operation (its owner, the other tenant involved, its ids) under the next
        write sequence number; returns it."""
        seq = self.seq(txn) + 1
        txn.put(b"seq", _U64.pack(seq), db=self.db["meta"])
        payload = _OPHEAD.pack(kind, coll, owner, tenant) + np.asarray(ids, ">u8").tobytes()
        txn.put(_U64.pack(seq), payload, db=self.db["oplog"])
        return seq

    def ops_after(
        self, txn: lmdb.Transaction, seq: int
    ) -> Iterator[tuple[int, int, int, int, int, np.ndarray]]:
        """(seq, kind, coll, owner, tenant, ids) of every logged operation after `seq`."""
        with txn.cursor(db=self.db["oplog"]) as cur:
            if not cur.set_range(_U64.pack(seq + 1)):
                return
            for k, v in cur:
                kind, coll, owner, tenant = _OPHEAD.unpack_from(v)
                ids = np.frombuffer(v, ">u8", offset=_OPHEAD.size).astype(np.uint64)
                yield _U64.unpack(k)[0], kind, coll, owner, tenant, ids

    def trim_ops(self, txn: lmdb.Transaction, upto: int) -> int:
        """Delete logged operations with seq <= upto; returns how many."""
        n = 0
        with txn.cursor(db=self.db["oplog"]) as cur:
            if cur.first():
                while _U64.unpack(cur.key())[0] <= upto and cur.delete():
                    n += 1
                    if not cur.key():
                        break
        return n

    # -- maintenance -------------------------------------------------------------------------
    def backup(self, dest: str | os.PathLike[str]) -> None:
        """A consistent, compacted copy of the live environment into the empty folder `dest`."""
        Path(dest).mkdir(parents=True, exist_ok=True)
        with self._resize.read_lock():
            self.env.copy(str(dest), compact=True)

    def stats(self) -> dict[str, int]:
        info = self.env.info()
        return {
            "map_size": info["map_size"],
            "used_bytes": self._used(),
            "readers": info["num_readers"],
        }
