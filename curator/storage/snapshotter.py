"""Index snapshots of a database's collections: on demand, in the background, and in backups.

A snapshot is written to `snapshots/<collection id>-<seq>.npz` without blocking readers (the
index arrays are copied under the collection's read lock, then written outside any lock); its
record in LMDB is updated in a write transaction, which also trims the operation log up to the
oldest sequence a replay still needs: that of the snapshot of every collection with writes since
its snapshot (an idle collection needs none of the later ops, which are all of others). The
previous file is deleted after that. Temporary files left by a kill are removed at start.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from curator.config import DatabaseConfig
from curator.errors import AlreadyExists
from curator.index import snapshot as codec
from curator.storage.collection import Collection
from curator.storage.files import FILE_MODE, private_dir, private_tree
from curator.storage.handoff import log_pins
from curator.storage.store import Store

__all__ = ["Snapshotter", "copy_database"]

log = logging.getLogger(__name__)


class Snapshotter:
    def __init__(
        self,
        store: Store,
        snap_dir: Path,
        collections: dict[str, Collection],
        write_lock: threading.RLock,
        config: DatabaseConfig,
    ) -> None:
        self.store = store
        self.snap_dir = snap_dir
        self.collections = collections  # shared with the database, read only here
        self.write_lock = write_lock
        self.config = config
        self._lock = threading.Lock()  # one snapshot (or backup) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not store.readonly:
            for tmp in snap_dir.glob("*.tmp"):  # a snapshot cut short by a kill
                log.warning("removing the unfinished snapshot file %s", tmp.name)
                tmp.unlink(missing_ok=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="curator-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def take(self, c: Collection) -> int:
        """Snapshot one collection now; returns the write sequence it reflects."""
        with self._lock:
            with c.lock.read_lock():
                arrays = {k: np.array(v, copy=True) for k, v in c.index.snapshot().items()}
                seq = c.applied_seq
                writes = c.writes_since_snapshot
            name = f"{c.info.id}-{seq}.npz"
            codec.save_arrays(arrays, self.snap_dir / name)
            (self.snap_dir / name).chmod(FILE_MODE)
            old = c.snapshot_seq

            def txn_fn(txn: Any) -> None:
                record = {"seq": seq, "file": name, "time": time.time()}
                self.store.put_json(txn, "snapshots", str(c.info.id), record)
                # The log must keep what any snapshot on disk needs to catch up; a collection
                # without one is rebuilt from the stored vectors at start-up, and one with no
                # writes since its snapshot needs none of the later ops (they are others').
                floor = min(
                    [seq]
                    + [
                        o.snapshot_seq
                        for o in self.collections.values()
                        if o is not c and o.has_snapshot and o.writes_since_snapshot
                    ]
                )
                pins = [o.log_pin for o in self.collections.values() if o.log_pin is not None]
                pins += log_pins(self.store, txn)  # tenant moves in progress (handoff.py)
                self.store.trim_ops(txn, min([floor, *pins]))

            with self.write_lock:
                if self.collections.get(c.info.name) is not c:  # dropped meanwhile
                    (self.snap_dir / name).unlink(missing_ok=True)
                    return seq
                self.store.write(txn_fn, frees=True)  # it trims the log: allowed when full
                c.snapshot_seq = seq
                c.has_snapshot = True
                c.writes_since_snapshot = max(0, c.writes_since_snapshot - writes)
                if not c.writes_since_snapshot:
                    c.dirty_since = None
            if old != seq:
                (self.snap_dir / f"{c.info.id}-{old}.npz").unlink(missing_ok=True)
            log.info("snapshot of %r at seq %d", c.info.name, seq)
            return seq

    def _due(self, c: Collection) -> bool:
        cfg = self.config
        if cfg.snapshot_every_writes and c.writes_since_snapshot >= cfg.snapshot_every_writes:
            return True
        return bool(
            cfg.snapshot_every_seconds
            and c.dirty_since is not None
            and time.monotonic() - c.dirty_since >= cfg.snapshot_every_seconds
        )

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for c in list(self.collections.values()):
                if self._due(c) and c.info.name in self.collections:
                    try:
                        self.take(c)
                    except Exception:  # keep the loop alive; the next round retries
                        log.exception("snapshot of %r failed", c.info.name)

    def backup(self, dest: Path) -> None:
        with self._lock:  # no snapshot file is replaced while it is copied
            copy_database(self.store, self.snap_dir, dest)


def copy_database(store: Store, snap_dir: Path, dest: Path) -> None:
    """Compacting copy of the LMDB environment, then the snapshot files, into `dest`. A
    snapshot file newer than the copied LMDB record is harmless: the copy ignores it."""
    if dest.exists() and any(dest.iterdir()):
        raise AlreadyExists(f"expected an empty or new backup folder, got {dest}")
    private_dir(dest)
    store.backup(dest / "lmdb")
    (dest / "snapshots").mkdir(parents=True, exist_ok=True)
    for f in snap_dir.glob("*.npz"):
        shutil.copy2(f, dest / "snapshots" / f.name)
    private_tree(dest)  # a backup holds every vector and key digest too
