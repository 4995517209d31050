"""Collection administration on the Database (a mixin): create, describe, drop, train,
bulk load, snapshots, backups and server info."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curator import __version__
from curator.config import IndexConfig, Metric
from curator.errors import (
    AlreadyExists,
    InvalidArgument,
)
from curator.facade.base import FacadeBase, _new_index
from curator.results import (
    CollectionInfo,
    ServerInfo,
)
from curator.storage import quota
from curator.storage.collection import Collection
from curator.storage.collection import CollectionInfo as CollectionRecord
from curator.validation import check_name

__all__ = ["CollectionAdmin"]

_BACKUP_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class CollectionAdmin(FacadeBase):
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
