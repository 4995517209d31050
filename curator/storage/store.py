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

from curator.errors import FailedPrecondition, Internal, ResourceExhausted
from curator.storage.files import FILE_MODE, private_dir
from curator.storage.records import (
    OP_DELETE,
    OP_DROP_TENANT,
    OP_GRANT,
    OP_REVOKE,
    OP_UPSERT,
    Records,
)

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


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

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


class Store(Records):
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
