"""Training runs off the write path: the write that crosses the threshold returns at once,
searches and writes go on during training, and what was written meanwhile is in the index
that is swapped in (issue #11 item 5; review D-4)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from curator.config import DatabaseConfig, IndexConfig, SearchParams
from curator.database import Database
from curator.errors import InvalidArgument
from curator.index.curator_index import CuratorIndex
from curator.storage.collection import Collection

EXACT = SearchParams(exact_search_threshold=0, search_ef=100_000)


@pytest.mark.timeout(120)
def test_training_runs_beside_writes_and_searches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    original = CuratorIndex.train

    def slow_train(self: CuratorIndex) -> None:
        started.set()
        assert release.wait(60), "the test never released training"
        original(self)

    monkeypatch.setattr(CuratorIndex, "train", slow_train)
    cfg = DatabaseConfig(data_dir=str(tmp_path), snapshot_every_seconds=0)
    db = Database(cfg)  # background: the trainer thread runs
    try:
        db.create_tenant("a")
        db.create_tenant("b")
        db.create_collection("c", 8, "l2", IndexConfig(train_min_vectors=400, max_sl_size=16))
        x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
        db.upsert("c", np.arange(500), x[:500], tenant="a")  # crosses 400: training starts
        assert started.wait(30), "no background training started"
        # training is blocked: writes and searches still answer
        db.upsert("c", np.arange(500, 800), x[500:800], tenant="a")
        db.delete("c", np.arange(0, 20), tenant="a")
        db.upsert("c", [1], x[:1], tenant="b")
        res = db.search("c", x[600:610], 1, tenant="a")
        assert res.ids[:, 0].tolist() == list(range(600, 610))
        assert not db.describe_collection("c").trained
        release.set()
        for _ in range(600):
            if db._trainer.runs:
                break
            threading.Event().wait(0.05)
        info = db.describe_collection("c")
        assert info.trained and info.vectors == 781
        idx = db._collection("c").index
        idx.check_invariants()
        got = db.search("c", x[:40], 1, tenant="a", params=EXACT).ids[:, 0].tolist()
        assert got[20:] == list(range(20, 40)) and all(g not in range(20) for g in got[:20])
        assert db.count("c", tenant="b") == 1
    finally:
        release.set()
        db.close()
    with Database(cfg, background=False) as again:  # and the result is durable
        assert again.count("c") == 781 and again.describe_collection("c").trained


def test_explicit_train_after_a_bulk_load(tmp_path: Path) -> None:
    cfg = DatabaseConfig(data_dir=str(tmp_path))
    with Database(cfg, background=False) as db:
        db.create_tenant("a")
        db.create_collection("c", 8, "l2", IndexConfig(train_min_vectors=10**9))
        x = np.random.default_rng(1).standard_normal((3000, 8)).astype(np.float32)
        db.upsert("c", np.arange(3000), x, tenant="a")
        assert not db.describe_collection("c").trained
        assert db.train("c")
        info = db.describe_collection("c")
        assert info.trained and info.vectors == 3000
        res = db.search("c", x[:50], 1, tenant="a", params=EXACT)
        assert res.ids[:, 0].tolist() == list(range(50))


def test_writes_during_the_lock_free_catch_up_reach_the_swapped_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer replays the writes made during training without any lock, then the few
    made during that replay under the locks: creates, writes, grants and drops that land
    between the two passes are all in the index that is swapped in."""
    original = Collection._replay
    passes: list[set[int] | None] = []
    cfg = DatabaseConfig(data_dir=str(tmp_path), snapshot_every_seconds=0)
    x = np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float32)
    db = Database(cfg, background=False)

    def replay(self: Collection, store: object, tenants: set[int] | None) -> None:
        original(self, store, tenants)  # type: ignore[arg-type]
        passes.append(tenants)
        if tenants is None:  # between the passes: writes go on
            db.create_tenant("late")
            db.allow_sharing("late", "a")
            db.upsert("c", [900, 901], x[900:902], tenant="late")
            db.grant("c", [901], "a", tenant="late")
            db.drop_tenant("b")
            db.delete("c", [600], tenant="a")

    try:
        for t in ("a", "b"):
            db.create_tenant(t)
        db.allow_sharing("a", "b")
        db.create_collection("c", 8, "l2", IndexConfig(train_min_vectors=10**6, max_sl_size=16))
        db.upsert("c", np.arange(700), x[:700], tenant="a")
        db.upsert("c", np.arange(50), x[700:750], tenant="b")  # ids scoped per owner
        db.grant("c", np.arange(100, 110), "b", tenant="a")
        monkeypatch.setattr(Collection, "_replay", replay)
        assert db.train("c")
        assert passes[0] is None and passes[1] is not None and len(passes) == 2
        idx = db._collection("c").index
        idx.check_invariants()
        assert db.describe_collection("c").trained
        assert db.count("c") == 699 + 2 and db.count("c", tenant="late") == 2
        got = db.search("c", x[900:902], 1, tenant="late", params=EXACT).ids[:, 0]
        assert got.tolist() == [900, 901]
        seen = db.search("c", x[901:902], 1, tenant="a", params=EXACT)
        assert seen.ids[0, 0] == 901 and seen.owners[0][0] == "late"
        assert db.get("c", [600], tenant="a").ids.tolist() == []
        assert not db.has_tenant("b")
    finally:
        db.close()
    with Database(cfg, background=False) as again:
        assert again.count("c") == 701 and again.count("c", tenant="late") == 2


def test_training_uses_the_configured_threads_and_restores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faiss = pytest.importorskip("faiss")
    numba = pytest.importorskip("numba")
    seen: list[tuple[int, int]] = []
    original = CuratorIndex.train

    def train(self: CuratorIndex) -> None:
        seen.append((faiss.omp_get_max_threads(), numba.get_num_threads()))
        original(self)

    monkeypatch.setattr(CuratorIndex, "train", train)
    before = (faiss.omp_get_max_threads(), numba.get_num_threads())
    cfg = DatabaseConfig(data_dir=str(tmp_path), train_threads=1)
    with Database(cfg, background=False) as db:
        db.create_tenant("a")
        db.create_collection("c", 8, "l2", IndexConfig(train_min_vectors=10**6))
        db.upsert("c", np.arange(300), np.ones((300, 8), np.float32), tenant="a")
        assert db.train("c")
    assert seen == [(1, 1)]
    assert (faiss.omp_get_max_threads(), numba.get_num_threads()) == before
    with pytest.raises(InvalidArgument, match="train_threads"):
        DatabaseConfig(data_dir=str(tmp_path), train_threads=-1)
