"""The proximity graph: recall against brute force, filters, maintenance without a rebuild."""

from __future__ import annotations

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig, SearchParams
from curator.errors import FailedPrecondition
from curator.index import linker
from curator.index.graph import ProximityGraph
from curator.index.vector_store import VectorStore
from tests.conftest import brute_force, make_data, recall

pytestmark = pytest.mark.timeout(120)

CFG = IndexConfig(train_min_vectors=1000, branching=8, max_leaf_size=64, max_sl_size=64)


def _store(x: np.ndarray) -> tuple[VectorStore, np.ndarray]:
    st = VectorStore(x.shape[1])
    slots = st.allocate(len(x))
    st.put(slots, np.arange(len(x), dtype=np.uint64), x, 0, np.zeros(len(x), np.int32))
    return st, slots


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray]:
    d = make_data(n=4000, d=16, n_tenants=4, seed=11)
    return d.x, d.queries[:60]


def test_unfiltered_recall_and_touched(small) -> None:
    x, q = small
    st, _slots = _store(x)
    g = ProximityGraph.build(st, ip=False, degree=16, ef_construction=64)
    assert g.n_linked == len(x) and not len(g.fresh)
    s, d, touched = g.search(q, 10, 64, st)
    truth, truth_d = brute_force(x, np.arange(len(x)), q, 10, "l2")
    assert recall(s.astype(np.int64), d, truth, truth_d) >= 0.95
    assert (touched < len(x) / 2).all(), "a graph search must not scan the collection"
    assert (np.diff(d, axis=1) >= 0).all()


@pytest.mark.parametrize("fraction", [0.02, 0.2, 0.7])
@pytest.mark.parametrize("two_hop", [False, True])
def test_filtered_search_stays_inside_the_filter(small, fraction, two_hop) -> None:
    x, q = small
    x = x / np.linalg.norm(x, axis=1, keepdims=True)  # inner product over unit vectors
    st, _ = _store(x)
    g = ProximityGraph.build(st, ip=True, degree=16, ef_construction=64)
    rng = np.random.default_rng(int(fraction * 100))
    allow = np.zeros(len(st.live), bool)
    allow[: len(x)] = rng.random(len(x)) < fraction
    allowed = np.flatnonzero(allow).astype(np.int32)
    s, d, _ = g.search(q, 10, 64, st, allow, allowed, two_hop)
    assert allow[s[s >= 0]].all(), "a result outside the filter"
    if not two_hop:  # the default rule: exact-quality results at every selectivity
        truth, truth_d = brute_force(x, allowed.astype(np.int64), q, 10, "ip")
        assert recall(s.astype(np.int64), d, truth, truth_d) >= 0.95


def test_maintenance_matches_brute_force(small) -> None:
    """Insert (fresh, then linked), delete (tombstone, then repair), re-layout: no rebuild."""
    x, q = small
    rng = np.random.default_rng(5)
    st, slots = _store(x[:1500])
    g = ProximityGraph(ip=False, degree=16, ef_construction=64, link_min=200, repair_ratio=0.05)
    g.add(slots, st)  # past link_min: the background linker links them
    assert linker.wait_idle(60)
    assert g.n_linked == 1500 and not g.pending
    live = {int(s): i for i, s in enumerate(slots)}  # slot -> row of x
    nxt = 1500
    for step in range(12):
        if step % 3 == 2:
            gone = rng.choice(sorted(live), 150, replace=False).astype(np.int32)
            g.remove(gone, st)
            st.release(gone)
            for s in gone.tolist():
                del live[s]
        else:
            new = st.allocate(120)  # reuses released slots first
            rows = np.arange(nxt, nxt + 120) % len(x)
            nxt += 120
            st.put(new, rows.astype(np.uint64), x[rows], 0, np.zeros(120, np.int32))
            g.add(new, st)
            live.update(zip(new.tolist(), rows.tolist(), strict=True))
        if step == 8:  # train()'s re-layout: compact live slots in a new order
            old_slots = np.array(sorted(live), np.int32)
            order = rng.permutation(old_slots)
            new_slot = np.full(st.high, -1, np.int64)
            new_slot[order] = np.arange(len(order))
            new_st = st.reordered(order)
            g.relayout(order, new_slot, st, new_st)
            live = {int(new_slot[s]): r for s, r in live.items()}
            st = new_st
        ls = np.array(sorted(live), np.int32)
        s, d, _ = g.search(q, 10, 64, st)
        assert np.isin(s[s >= 0], ls).all(), f"step {step}: a deleted slot was returned"
        truth, truth_d = brute_force(st.vectors, ls.astype(np.int64), q, 10, "l2")
        assert recall(s.astype(np.int64), d, truth, truth_d) >= 0.95, step
    assert linker.wait_idle(60)
    assert g.n_linked + len(g.fresh) == len(live)
    g.repair(st)
    assert not (g.nbr[g.nbr >= 0] >= st.high).any()
    assert g.linked[g.nbr[g.nbr >= 0]].all(), "an edge to an unlinked slot after repair"


def _index(metric: str = "l2") -> tuple[CuratorIndex, np.ndarray, np.ndarray]:
    d = make_data(n=3000, d=16, n_tenants=6, seed=2)
    idx = CuratorIndex(16, metric, CFG)
    for t in np.unique(d.owner):
        rows = np.flatnonzero(d.owner == t)
        idx.insert(rows, d.x[rows], owner=f"t{t}")
    return idx, d.x, d.queries[:40]


def test_index_builds_the_graph_when_needed_and_maintains_it() -> None:
    idx, x, q = _index()
    idx.tenant_graph_min = 0  # the shared graph under test, not "t0"'s own links
    assert idx.is_trained and idx._graph is None and idx.memory_usage()["graph"] == 0
    _, _, plan = idx.search("t0", q, 10, explain=True)
    # The first search that wants the graph starts linking in the background: the tree
    # serves it (tests/test_graph_build.py), the graph the searches after the build.
    assert plan.path == "tree" and idx._graph is not None
    assert linker.wait_idle(60) and not idx._graph.building
    _, _, plan = idx.search("t0", q, 10, explain=True)
    assert plan.path == "graph"
    assert idx.memory_usage()["graph"] >= len(x) * CFG.graph_degree * 4
    rng = np.random.default_rng(0)
    truth_x = {i: x[i] for i in range(len(x))}
    owners = dict(enumerate(idx.owner_of(np.arange(len(x)))))
    grants: set[tuple[int, str]] = set()
    next_id = len(x)
    p = SearchParams(exact_search_threshold=50)
    for step in range(10):
        op = step % 5
        if op == 0:
            new = rng.standard_normal((150, 16)).astype(np.float32) * 3
            ids = np.arange(next_id, next_id + 150)  # two batches pass link_min (256)
            next_id += 150
            idx.insert(ids, new, owner="t0")
            truth_x.update(zip(ids.tolist(), new, strict=True))
            owners.update(dict.fromkeys(ids.tolist(), "t0"))
        elif op == 1:
            gone = rng.choice(sorted(truth_x), 120, replace=False)
            idx.delete(gone)
            for i in gone.tolist():
                del truth_x[i], owners[i]
            grants = {(i, t) for i, t in grants if i in truth_x}
        elif op == 2:
            ids = rng.choice(sorted(truth_x), 300, replace=False)
            idx.grant(ids, "t5")
            grants |= {(int(i), "t5") for i in ids if owners[int(i)] != "t5"}
        elif op == 3:
            had = sorted(i for i, t in grants if t == "t5")[:100]
            idx.revoke(had, "t5")
            grants -= {(i, "t5") for i in had}
        else:
            idx.train()
        for tenant in ("t0", "t5"):
            ids = np.array(
                sorted(
                    {i for i, o in owners.items() if o == tenant}
                    | {i for i, t in grants if t == tenant}
                ),
                np.int64,
            )
            got, got_d, plan = idx.search(tenant, q, 10, p, explain=True)
            assert np.isin(got[got >= 0], ids).all(), (step, tenant, "outside the tenant")
            xs = np.stack([truth_x[i] for i in ids.tolist()])
            t_rows, truth_d = brute_force(xs, np.arange(len(ids)), q, 10, "l2")
            truth = np.where(t_rows >= 0, ids[np.maximum(t_rows, 0)], -1)
            assert recall(got, got_d, truth, truth_d) >= 0.95, (step, tenant, plan)
        idx.check_invariants()  # includes the graph: live = linked + fresh, nothing dead
    assert linker.wait_idle(60)
    assert len(idx._graph.fresh) < 150, "the 300 inserted vectors were linked into the graph"


def test_snapshot_round_trip_keeps_the_graph(tmp_path) -> None:
    idx, _, q = _index("cosine")
    idx.build_graph()
    idx.insert(np.arange(10_000, 10_050), np.ones((50, 16), np.float32), owner="t1")
    assert len(idx._graph.fresh) == 50
    idx.save(tmp_path / "s.npz")
    back = CuratorIndex.load(tmp_path / "s.npz")
    assert back._graph is not None
    np.testing.assert_array_equal(
        back._graph.nbr[: idx._store.high], idx._graph.nbr[: idx._store.high]
    )
    np.testing.assert_array_equal(back._graph.fresh, idx._graph.fresh)
    a = idx.search("t0", q, 10, explain=True)
    b = back.search("t0", q, 10, explain=True)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2]
    arrays = idx.snapshot()
    del arrays["graph_nbr"], arrays["graph_linked"], arrays["graph_fresh"], arrays["graph_params"]
    rebuilt = CuratorIndex.from_snapshot(arrays)  # no graph saved: built when first needed
    assert rebuilt._graph is None
    rebuilt.search("t0", q, 10)
    assert linker.wait_idle(60)
    assert rebuilt._graph is not None and rebuilt._graph.n_linked == len(rebuilt)
    arrays = idx.snapshot()
    arrays["graph_nbr"] = arrays["graph_nbr"].copy()
    arrays["graph_nbr"][0, 0] = 10**9
    with pytest.raises(FailedPrecondition, match="graph arrays"):
        CuratorIndex.from_snapshot(arrays)


def test_graph_can_be_disabled() -> None:
    d = make_data(n=1500, d=8, n_tenants=2, seed=4)
    idx = CuratorIndex(8, "l2", IndexConfig(train_min_vectors=1000, graph_degree=0))
    idx.insert(np.arange(1500), d.x, owner="a")
    assert idx.is_trained and idx._graph is None and idx.memory_usage()["graph"] == 0
    _, _, plan = idx.search("a", d.queries[:5], 10, explain=True)
    assert plan.path == "tree"


def _exact_top(st: VectorStore, g: ProximityGraph, q: np.ndarray, readable: np.ndarray) -> None:
    """A graph search as wide as the collection equals brute force over `readable` slots,
    whether they are linked or still pending."""
    allow = np.zeros(len(st.live), bool)
    allow[readable] = True
    for mask, rows in ((None, readable), (allow, readable)):
        s, d, _ = g.search(q, 10, 8192, st, mask, None if mask is None else rows)
        truth, truth_d = brute_force(st.vectors, rows.astype(np.int64), q, 10, "l2")
        assert recall(s.astype(np.int64), d, truth, truth_d, tol=1e-5) == 1.0


def test_linking_is_off_the_write_path_and_searches_stay_exact(small) -> None:
    """Inserts only queue slots; a background thread links them while searches and more
    inserts go on. Every search meanwhile returns the exact top-k of what is readable."""
    x, q = small
    rng = np.random.default_rng(8)
    st, slots = _store(x[:2000])
    g = ProximityGraph.build(st, ip=False, degree=16, ef_construction=64)
    with linker.paused():
        new = st.allocate(1500)
        st.put(
            new, np.arange(2000, 3500, dtype=np.uint64), x[2000:3500], 0, np.zeros(1500, np.int32)
        )
        g.add(new, st)  # past link_min (256): scheduled, not linked by this call
        assert g.pending == 1500 and g.n_linked == 2000
        live = np.r_[slots, new]
        _exact_top(st, g, q[:20], live)
        _exact_top(st, g, q[:20], np.sort(rng.choice(live, 1200, replace=False)))
    raced = 0
    for step in range(30):  # the linker runs now: race it with inserts and searches
        more = st.allocate(40)
        rows = (3500 + 40 * step + np.arange(40)) % len(x)
        st.put(more, rows.astype(np.uint64) + 10_000, x[rows], 0, np.zeros(40, np.int32))
        g.add(more, st)
        live = np.r_[live, more]
        raced += g.pending > 0
        part = np.sort(rng.choice(live, 1500, replace=False))
        _exact_top(st, g, q[step : step + 5], part)
    assert raced, "every search found nothing pending"
    assert linker.wait_idle(60)
    assert g.pending < g.link_min, "what is left is below the batch size"
    assert g.n_linked + g.pending == len(live) == 3500 + 30 * 40
    g.link_pending(st)
    assert g.pending == 0 and g.n_linked == len(live)
    _exact_top(st, g, q[:20], live)
    g.check(st)
