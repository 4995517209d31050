"""A collection inside the database: its index, its lock and its snapshot/replay logic."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import fasteners
import numpy as np
from tqdm import tqdm

from curator.config import IndexConfig, Metric
from curator.errors import CuratorError
from curator.index.curator_index import CuratorIndex
from curator.storage.store import Store

__all__ = ["Collection", "CollectionInfo"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CollectionInfo:
    name: str
    id: int
    dim: int
    metric: Metric
    config: IndexConfig

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dim": self.dim,
            "metric": self.metric.value,
            "config": dataclasses.asdict(self.config),
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> CollectionInfo:
        return cls(name, d["id"], d["dim"], Metric.parse(d["metric"]), IndexConfig(**d["config"]))


class Collection:
    """Readers (searches) share `lock`; a writer holds it alone while it changes the index,
    so no reader ever sees half of a batch."""

    def __init__(self, info: CollectionInfo, index: CuratorIndex, applied_seq: int) -> None:
        self.info = info
        self.index = index
        self.lock = fasteners.ReaderWriterLock()
        self.applied_seq = applied_seq  # last write sequence reflected in the index
        self.snapshot_seq = 0
        self.dirty_since: float | None = None  # time of the first unsnapshotted write
        self.writes_since_snapshot = 0

    def note_write(self, seq: int) -> None:
        self.applied_seq = seq
        self.writes_since_snapshot += 1
        if self.dirty_since is None:
            self.dirty_since = time.monotonic()

    # -- start-up ------------------------------------------------------------------------
    @classmethod
    def open(
        cls, store: Store, info: CollectionInfo, snap_dir: Path, tenant_names: dict[int, str]
    ) -> Collection:
        """Load the latest snapshot and replay later writes; rebuild from the stored
        vectors if the snapshot is missing, corrupt or of another format."""
        with store.read() as txn:
            record = store.get_json(txn, "snapshots", str(info.id))
            head = store.seq(txn)
        index = None
        if record is not None:
            path = snap_dir / record["file"]
            try:
                index = CuratorIndex.load(path)
                if index.dim != info.dim or index.metric is not info.metric:
                    raise ValueError(f"snapshot {path} is of another collection")
            except (CuratorError, OSError, ValueError, KeyError) as e:
                log.warning(
                    "collection %r: snapshot unusable (%s); rebuilding from vectors", info.name, e
                )
                index = None
        if index is None:
            coll = cls(info, cls._rebuild(store, info, tenant_names), head)
            coll.dirty_since = time.monotonic()  # take a snapshot soon
            return coll
        coll = cls(info, index, record["seq"])
        coll.snapshot_seq = record["seq"]
        coll._replay(store, tenant_names)
        return coll

    @staticmethod
    def _rebuild(store: Store, info: CollectionInfo, tenant_names: dict[int, str]) -> CuratorIndex:
        t0 = time.perf_counter()
        index = CuratorIndex(info.dim, info.metric, info.config)
        with store.read() as txn:
            n = store.count_prefix(txn, "vectors", info.id)
            ids = np.empty(n, np.uint64)
            owners = np.empty(n, np.int64)
            x = np.empty((n, info.dim), np.float32)
            rows = store.scan_vectors(txn, info.id, info.dim)
            for i, (vid, owner, vec) in enumerate(
                tqdm(rows, total=n, desc=f"rebuilding {info.name}", unit="vec", disable=None)
            ):
                ids[i], owners[i], x[i] = vid, owner, vec
            grants = list(store.scan_access(txn, info.id))
        with index.deferred_training():
            _insert_by_owner(index, ids, x, owners, tenant_names)
            _grant_all(index, grants, tenant_names)
        log.info(
            "collection %r: rebuilt the index of %d vectors in %.1f s",
            info.name,
            n,
            time.perf_counter() - t0,
        )
        return index

    def _replay(self, store: Store, tenant_names: dict[int, str]) -> None:
        """Bring a snapshot up to date: re-read the current state of every id written after
        the snapshot's sequence number (state-based, so replaying twice is harmless)."""
        touched: list[np.ndarray] = []
        with store.read() as txn:
            head = store.seq(txn)
            for _, _, coll, _, ids in store.ops_after(txn, self.applied_seq):
                if coll == self.info.id:
                    touched.append(ids)
            if touched:
                ids = np.unique(np.concatenate(touched))
                found, owners, x = store.get_vectors(txn, self.info.id, ids, self.info.dim)
                grants = [
                    (int(v), t)
                    for v in ids[found].tolist()
                    for t in store.grants_of(txn, self.info.id, v)
                ]
        idx = self.index
        if touched:
            with idx.deferred_training():
                idx.delete(ids)
                _insert_by_owner(idx, ids[found], x[found], owners[found], tenant_names)
                _grant_all(idx, grants, tenant_names)
        known = set(tenant_names.values())
        for name in idx.tenants():
            if name not in known:  # dropped after the snapshot
                idx.drop_tenant(name)
        log.info(
            "collection %r: replayed %d writes after snapshot seq %d",
            self.info.name,
            len(touched),
            self.applied_seq,
        )
        self.applied_seq = head
        if touched:
            self.writes_since_snapshot = len(touched)
            self.dirty_since = time.monotonic()


def _insert_by_owner(
    index: CuratorIndex,
    ids: np.ndarray,
    x: np.ndarray,
    owners: np.ndarray,
    tenant_names: dict[int, str],
) -> None:
    order = np.argsort(owners, kind="stable")
    bounds = np.flatnonzero(np.diff(owners[order])) + 1
    for rows in np.split(order, bounds) if len(order) else []:
        index.insert(ids[rows], x[rows], owner=tenant_names[int(owners[rows[0]])])


def _grant_all(
    index: CuratorIndex, grants: list[tuple[int, int]], tenant_names: dict[int, str]
) -> None:
    if not grants:
        return
    arr = np.array(grants, np.uint64)
    order = np.argsort(arr[:, 1], kind="stable")
    arr = arr[order]
    bounds = np.flatnonzero(np.diff(arr[:, 1])) + 1
    for part in np.split(arr, bounds):
        index.grant(part[:, 0], tenant_names[int(part[0, 1])])
