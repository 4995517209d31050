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
import threading
import time
from collections.abc import Callable
from pathlib import Path

from curator.auth import KeyRing
from curator.cache.config import CacheConfig
from curator.cache.facade import CacheFacade
from curator.cache.semantic_cache import SemanticCache
from curator.config import DatabaseConfig
from curator.facade.base import _cache_key
from curator.facade.collections import CollectionAdmin
from curator.facade.moves import TenantMoves
from curator.facade.reads import VectorReads
from curator.facade.tenants import TenantAdmin
from curator.facade.writes import VectorWrites
from curator.startup_log import StartupLog
from curator.storage import files
from curator.storage.catalog import Catalog
from curator.storage.collection import Collection
from curator.storage.collection import CollectionInfo as CollectionRecord
from curator.storage.dir_lock import DirLock
from curator.storage.handoff import Handoff
from curator.storage.snapshotter import Snapshotter
from curator.storage.store import Store
from curator.storage.trainer import Trainer

__all__ = ["Database"]

log = logging.getLogger(__name__)


class Database(TenantAdmin, CollectionAdmin, VectorWrites, VectorReads, TenantMoves, CacheFacade):
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
        self._trainer = Trainer(
            self.store,
            self._collections,
            self._write_lock,
            self.catalog.ids,
            threads=cfg.train_threads,
        )
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

    # -- collections ----------------------------------------------------------------------------

    # -- writes --------------------------------------------------------------------------------

    # -- reads ----------------------------------------------------------------------------------

    # -- snapshots and backup ---------------------------------------------------------------------

    # -- API keys (stored hashed; see curator.auth) ----------------------------------------------

    # -- helpers --------------------------------------------------------------------------------
