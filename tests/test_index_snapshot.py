"""Index snapshots: a round trip gives the same index; foreign or damaged ones are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig
from curator.errors import FailedPrecondition
from tests.conftest import make_data


@pytest.fixture(scope="module")
def index() -> tuple[CuratorIndex, np.ndarray]:
    d = make_data(n=5000, d=16, n_tenants=10, seed=9)
    idx = CuratorIndex(16, "cosine", IndexConfig(train_min_vectors=1000, max_sl_size=32))
    for t in np.unique(d.owner):
        rows = np.flatnonzero(d.owner == t)
        idx.insert(rows, d.x[rows], owner=f"t{t}")
    for name, ids in d.readers.items():
        idx.grant(ids, name)
    idx.revoke(d.readers["t1"][d.owner[d.readers["t1"]] != 1][:50], "t1")
    idx.delete(np.arange(0, 5000, 7))
    idx.drop_tenant("t9")
    return idx, d.queries[:50]


def _same(a: CuratorIndex, b: CuratorIndex, q: np.ndarray) -> None:
    assert a.tenants() == b.tenants() and len(a) == len(b)
    for t in a.tenants():
        np.testing.assert_array_equal(a.readable_ids(t), b.readable_ids(t))
        ra, rb = a.search(t, q, 10), b.search(t, q, 10)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[1], rb[1])


def test_round_trip_in_memory_and_on_disk(index, tmp_path: Path) -> None:
    idx, q = index
    _same(idx, CuratorIndex.from_snapshot(idx.snapshot()), q)
    idx.save(tmp_path / "i.npz")
    loaded = CuratorIndex.load(tmp_path / "i.npz")
    _same(idx, loaded, q)
    loaded.check_invariants()
    loaded.insert([10**9], q[:1], owner="t0")  # and it keeps working
    loaded.grant([10**9], "t2")
    assert loaded.search("t2", q[:1], 1)[0][0, 0] == 10**9
    loaded.check_invariants()


def test_snapshot_has_no_pickled_objects(index, tmp_path: Path) -> None:
    idx, _ = index
    idx.save(tmp_path / "i.npz")
    with np.load(tmp_path / "i.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_foreign_and_damaged_snapshots_are_refused(index, tmp_path: Path) -> None:
    idx, _ = index
    arrays = idx.snapshot()
    meta = json.loads(bytes(arrays["meta"]))
    meta["format_version"] = 99
    with pytest.raises(FailedPrecondition, match="format version"):
        CuratorIndex.from_snapshot(
            {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
        )
    with pytest.raises(FailedPrecondition, match="missing"):
        CuratorIndex.from_snapshot({k: v for k, v in arrays.items() if k != "sl_slots"})
    path = tmp_path / "bad.npz"
    idx.save(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(FailedPrecondition, match="readable"):
        CuratorIndex.load(path)
    with pytest.raises(FailedPrecondition):
        CuratorIndex.load(tmp_path / "missing.npz")
