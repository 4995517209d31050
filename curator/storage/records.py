"""The row layouts of the LMDB store (a mixin of curator.storage.store.Store): vectors,
documents and grants keyed coll | owner | id, the quarantine, and the operation log keyed by
sequence. Keys are big-endian, so LMDB's byte order is numeric order (see store.py for the
whole layout)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import lmdb
import numpy as np

__all__ = ["OP_DELETE", "OP_DROP_TENANT", "OP_GRANT", "OP_REVOKE", "OP_UPSERT", "Records"]

OP_UPSERT, OP_DELETE, OP_GRANT, OP_REVOKE, OP_DROP_TENANT = 1, 2, 3, 4, 5

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_VKEY = struct.Struct(">IIQ")
_AKEY = struct.Struct(">IIQI")
_OPHEAD = struct.Struct(">BIII")
_OWNER = struct.Struct(">II")


class Records:
    """Vector, document, grant, quarantine and operation-log rows (in a caller's txn)."""

    db: dict[str, Any]  # the named sub-databases (set by Store)

    def seq(self, txn: lmdb.Transaction) -> int:
        """The last write sequence number committed (0: none yet)."""
        raw = txn.get(b"seq", db=self.db["meta"])
        return _U64.unpack(raw)[0] if raw else 0

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
