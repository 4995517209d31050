"""The proximity graph's first build runs in the background: no search or write waits for
it, searches stay right meanwhile (the tree serves them), and it survives writes, a
snapshot and an explicit `build_graph()` racing it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig, SearchParams
from curator.index import linker
from tests.conftest import brute_force, make_data, recall

pytestmark = pytest.mark.timeout(120)

CFG = IndexConfig(train_min_vectors=1000, branching=8, max_leaf_size=64, max_sl_size=64)


def _index(n: int) -> tuple[CuratorIndex, np.ndarray, np.ndarray]:
    d = make_data(n=n, d=16, n_tenants=4, seed=5)
    idx = CuratorIndex(16, "l2", CFG)
    idx.insert(np.arange(n), d.x, owner="all")  # one tenant reads everything: the graph's case
    return idx, d.x, d.queries[:40]


def _check_recall(idx: CuratorIndex, xs: dict[int, np.ndarray], q: np.ndarray) -> str:
    ids = np.array(sorted(xs), np.int64)
    got, got_d, plan = idx.search("all", q, 10, SearchParams(), explain=True)
    assert np.isin(got[got >= 0], ids).all(), "a deleted vector was returned"
    rows, truth_d = brute_force(
        np.stack([xs[i] for i in ids.tolist()]), np.arange(len(ids)), q, 10, "l2"
    )
    truth = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
    assert recall(got, got_d, truth, truth_d) >= 0.95, plan
    return plan.path


def test_the_first_graph_search_starts_a_background_build_and_the_tree_serves() -> None:
    idx, x, q = _index(6000)
    xs = dict(enumerate(x))
    with linker.paused():  # hold the build where it starts
        assert _check_recall(idx, xs, q) == "tree"
        g = idx._graph
        assert g is not None and g.building and g.pending == len(x) and g.n_linked == 0
        # Writes go on during the build: new vectors join the fresh set, deletes leave it.
        new = np.random.default_rng(1).standard_normal((500, 16)).astype(np.float32)
        idx.insert(np.arange(10_000, 10_500), new, owner="all")
        xs.update(zip(range(10_000, 10_500), new, strict=True))
        gone = np.arange(0, 6000, 7)
        idx.delete(gone)
        for i in gone.tolist():
            del xs[i]
        assert g.pending == len(xs)
        assert _check_recall(idx, xs, q) == "tree"  # still building: the tree, still right
        idx.check_invariants()
    assert linker.wait_idle(60)
    assert idx._graph is g and not g.building and g.pending == 0 and g.n_linked == len(xs)
    assert _check_recall(idx, xs, q) == "graph"
    idx.check_invariants()


def test_a_snapshot_taken_mid_build_resumes_building(tmp_path) -> None:
    idx, x, q = _index(4000)
    with linker.paused():
        idx.search("all", q[:1], 10)
        assert idx._graph is not None and idx._graph.building
        idx.save(tmp_path / "s.npz")
        back = CuratorIndex.load(tmp_path / "s.npz")
        assert back._graph is not None and back._graph.building
        _, _, plan = back.search("all", q[:1], 10, explain=True)
        assert plan.path == "tree"
    assert linker.wait_idle(60)
    assert not back._graph.building and back._graph.pending == 0
    assert _check_recall(back, dict(enumerate(x)), q) == "graph"
    back.check_invariants()


def test_build_graph_racing_the_background_build_links_each_slot_once() -> None:
    idx, x, q = _index(20_000)
    idx.search("all", q[:1], 10)  # starts the background build
    done = threading.Event()

    def search_loop() -> None:  # searches during both builds stay inside the live set
        while not done.is_set():
            got, _ = idx.search("all", q[:4], 10)
            assert (got >= 0).all()

    t = threading.Thread(target=search_loop)
    t.start()
    try:
        g = idx.build_graph()  # links the rest now, in this thread
    finally:
        done.set()
        t.join()
    assert g is idx._graph and g.pending == 0 and not g.building
    assert linker.wait_idle(60)
    assert g.n_linked == len(x)
    idx.check_invariants()  # counts linked slots and checks every edge
    assert _check_recall(idx, dict(enumerate(x)), q) == "graph"
