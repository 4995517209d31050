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
from curator.validation import MAX_SQ_NORM

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
        self.has_snapshot = False  # a snapshot record exists (its seq may be 0)
        self.dirty_since: float | None = None  # time of the first unsnapshotted write
        self.writes_since_snapshot = 0
        self.quarantined = 0  # stored rows start-up could not apply (see _quarantine)
        # while a background training runs: the seq its copy reflects; the op log after it
        # must be kept (the trainer replays it into the new index)
        self.log_pin: int | None = None
        self.bulk_loads = 0  # Database.bulk_load blocks open: no automatic training

    def note_write(self, seq: int) -> None:
        self.applied_seq = seq
        self.writes_since_snapshot += 1
        if self.dirty_since is None:
            self.dirty_since = time.monotonic()

    # -- start-up ------------------------------------------------------------------------
    @classmethod
    def open(
        cls, store: Store, info: CollectionInfo, snap_dir: Path, tenants: set[int]
    ) -> Collection:
        """Load the latest snapshot and replay later writes; rebuild from the stored
        vectors if the snapshot is missing, corrupt or of another format. `tenants`: the ids
        of the tenants that exist. Never fails on a stored row: a row the index cannot take
        (an unknown owner, a vector that does not validate) is quarantined and counted."""
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
            except (CuratorError, OSError, ValueError, KeyError, TypeError) as e:
                log.warning(
                    "collection %r: snapshot unusable (%s); rebuilding from vectors", info.name, e
                )
                index = None
        if index is None:
            index, bad = cls._rebuild(store, info, tenants)
            coll = cls(info, index, head)
            coll.quarantined = bad
            coll.dirty_since = time.monotonic()  # take a snapshot soon
            return coll
        coll = cls(info, index, record["seq"])
        coll.snapshot_seq = record["seq"]
        coll.has_snapshot = True
        coll._replay(store, tenants)
        return coll

    @staticmethod
    def _rebuild(store: Store, info: CollectionInfo, tenants: set[int]) -> tuple[CuratorIndex, int]:
        t0 = time.perf_counter()
        index = CuratorIndex(info.dim, info.metric, info.config)
        row_bytes = 4 * info.dim
        with store.read() as txn:
            n = store.count_prefix(txn, "vectors", info.id)
            ids = np.empty(n, np.uint64)
            owners = np.empty(n, np.int64)
            x = np.zeros((n, info.dim), np.float32)
            ok = np.ones(n, bool)
            rows = store.scan_vectors(txn, info.id, info.dim)
            for i, (owner, vid, raw) in enumerate(
                tqdm(rows, total=n, desc=f"rebuilding {info.name}", unit="vec", disable=None)
            ):
                ids[i], owners[i] = vid, owner
                if len(raw) == row_bytes:
                    x[i] = np.frombuffer(raw, np.float32)
                else:
                    ok[i] = False
            grants = list(store.scan_access(txn, info.id))
        ok &= np.isin(owners, np.fromiter(tenants, np.int64, len(tenants)))
        ok &= _valid_rows(x, info.metric is Metric.COSINE)
        bad_rows = [(int(owners[i]), int(ids[i])) for i in np.flatnonzero(~ok)]
        with index.deferred_training():
            _insert_by_owner(index, ids[ok], x[ok], owners[ok])
            bad_grants = _grant_all(index, grants, tenants)
        _quarantine(store, info, bad_rows, bad_grants)
        log.info(
            "collection %r: rebuilt the index of %d vectors in %.1f s",
            info.name,
            int(ok.sum()),
            time.perf_counter() - t0,
        )
        return index, len(bad_rows)

    def _replay(self, store: Store, tenants: set[int] | None) -> None:
        """Bring a snapshot up to date: re-read the current state of every (owner, id) written
        after the snapshot's sequence number (state-based, so replaying twice is harmless).
        `tenants=None`: a catch-up pass while writes go on (the trainer's), which takes every
        owner and tenant as live and quarantines nothing; a later pass with the catalog's
        tenants, under the writer lock, drops what was dropped meanwhile."""
        touched: dict[int, list[np.ndarray]] = {}
        state: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        grants: list[tuple[int, int, int]] = []
        n_ops = 0
        with store.read() as txn:
            head = store.seq(txn)
            for _, _, coll, owner, _, ids in store.ops_after(txn, self.applied_seq):
                if coll == self.info.id:
                    touched.setdefault(owner, []).append(ids)
                    n_ops += 1
            for owner, parts in touched.items():
                ids = np.unique(np.concatenate(parts))
                found, x = store.get_vectors(txn, self.info.id, owner, ids, self.info.dim)
                state.append((owner, ids, found, x))
                grants += [
                    (owner, int(v), t)
                    for v in ids[found].tolist()
                    for t in store.grants_of(txn, self.info.id, owner, v)
                ]
        idx = self.index
        bad_rows: list[tuple[int, int]] = []
        bad_grants: list[tuple[int, int, int]] = []
        if state:
            with idx.deferred_training():
                for owner, ids, found, x in state:
                    if idx.has_tenant(owner):
                        idx.delete(ids, owner=owner)
                    ok = found & _valid_rows(x, self.info.metric is Metric.COSINE)
                    if tenants is not None and owner not in tenants:
                        ok[:] = False
                    bad_rows += [(owner, int(v)) for v in ids[found & ~ok].tolist()]
                    idx.insert_prepared(ids[ok], x[ok], owner)
                bad_grants = _grant_all(idx, grants, tenants)
        if tenants is not None:
            for key in idx.tenants():
                if key not in tenants:  # dropped after the snapshot
                    idx.drop_tenant(key)
            _quarantine(store, self.info, bad_rows, bad_grants)
            self.quarantined += len(bad_rows)
        log.info(
            "collection %r: replayed %d writes after snapshot seq %d",
            self.info.name,
            n_ops,
            self.applied_seq,
        )
        self.applied_seq = head
        if n_ops:
            self.writes_since_snapshot = n_ops
            self.dirty_since = time.monotonic()


def _valid_rows(x: np.ndarray, normalize: bool) -> np.ndarray:
    """(n,) bool: rows the index accepts (finite, bounded norm, non-zero for cosine), checked
    in float64 chunks so that no norm overflows."""
    ok = np.empty(len(x), bool)
    for a in range(0, len(x), 65536):
        part = x[a : a + 65536].astype(np.float64)
        fin = np.asarray(np.isfinite(part).all(1))
        safe = np.where(fin[:, None], part, 0.0)
        sq: np.ndarray = np.einsum("ij,ij->i", safe, safe)
        good = fin & (sq <= MAX_SQ_NORM)
        if normalize:
            good &= sq > 0
        ok[a : a + 65536] = good
    return ok


def _quarantine(
    store: Store,
    info: CollectionInfo,
    rows: list[tuple[int, int]],
    grants: list[tuple[int, int, int]],
) -> None:
    """Move rows and grants start-up could not apply aside (loudly), so the next start is
    clean; a read-only open only reports them."""
    if not rows and not grants:
        return
    log.error(
        "collection %r: quarantined %d stored vectors and %d grants that the index cannot "
        "take (unknown owner or tenant, or an invalid vector); the database opens without them",
        info.name,
        len(rows),
        len(grants),
    )
    if store.readonly:
        return

    def txn_fn(txn: Any) -> None:
        for owner, vid in rows:
            store.quarantine(txn, "vectors", info.id, owner, vid)
        for owner, vid, t in grants:
            store.quarantine(txn, "access", info.id, owner, vid, t)

    store.write(txn_fn)


def _insert_by_owner(
    index: CuratorIndex, ids: np.ndarray, x: np.ndarray, owners: np.ndarray
) -> None:
    order = np.argsort(owners, kind="stable")
    bounds = np.flatnonzero(np.diff(owners[order])) + 1
    for rows in np.split(order, bounds) if len(order) else []:
        index.insert_prepared(ids[rows], x[rows], int(owners[rows[0]]))


def _grant_all(
    index: CuratorIndex, grants: list[tuple[int, int, int]], tenants: set[int] | None
) -> list[tuple[int, int, int]]:
    """Apply (owner, id, tenant) grants grouped by (owner, tenant); returns those that name an
    unknown tenant or a vector the index does not hold."""
    if not grants:
        return []
    arr = np.array(grants, np.uint64)
    order = np.lexsort((arr[:, 1], arr[:, 2], arr[:, 0]))
    arr = arr[order]
    keys = arr[:, 0] * np.uint64(1 << 32) + arr[:, 2]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    bad: list[tuple[int, int, int]] = []
    for part in np.split(arr, bounds):
        owner, t = int(part[0, 0]), int(part[0, 2])
        ok = index.contains(part[:, 1], owner=owner) if index.has_tenant(owner) else None
        if ok is None or (tenants is not None and t not in tenants):
            ok = np.zeros(len(part), bool)
        if ok.any():
            index.grant(part[ok, 1], t, owner=owner)
        bad += [(owner, int(v), t) for v in part[~ok, 1].tolist()]
    return bad
