"""Per-tenant links (tenant_graph.py): recall at defaults against brute force, writes
overlaid on them (lost vectors never returned, gained ones found; relinked past the
journal's limit), isolation, background building and memory accounting."""

from __future__ import annotations

import time

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig
from curator.index import cpu_budget
from curator.index import tenant_graph as TG
from tests.conftest import brute_force, recall

pytestmark = pytest.mark.timeout(180)

_D = 24


def _data(seed: int = 5) -> tuple[CuratorIndex, np.ndarray, np.ndarray]:
    """Tenant "big" (1,500 vectors spread over 40 clusters), "other" (1,200), "rest" (6,000:
    so both stay under the global graph's share of the collection), and queries."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, _D)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 40, 8700)] + rng.standard_normal((8700, _D))).astype(np.float32)
    idx = CuratorIndex(_D, "l2", IndexConfig(train_min_vectors=4000, max_sl_size=64))
    idx.insert(np.arange(1500), x[:1500], owner="big")
    idx.insert(np.arange(1500, 2700), x[1500:2700], owner="other")
    idx.insert(np.arange(2700, 8700), x[2700:], owner="rest")
    q = (centers[rng.integers(0, 40, 50)] + rng.standard_normal((50, _D))).astype(np.float32)
    return idx, x, q


def test_links_used_for_the_current_view_only_and_recall_at_defaults() -> None:
    idx, x, q = _data()
    assert idx.is_trained
    idx.tenant_graph_min = 10**9  # off: the tree
    _, _, plan = idx.search("big", q, 10, explain=True)
    assert plan.path == "tree"
    idx.tenant_graph_min = TG.MIN_SIZE
    # "big" and "other" (>= 1,024 vectors); "rest" holds 69 % of the collection: it takes the
    # global graph (planner.LINKS_MAX_SHARE)
    assert idx.link_tenants() == 2 and idx.link_tenants() == 0
    got, got_d, plan = idx.search("big", q, 10, explain=True)
    assert plan.path == "tenant-graph" and plan.touched_per_query < 1500
    truth, truth_d = brute_force(x, np.arange(1500), q, 10, "l2")
    assert recall(got, got_d, truth, truth_d) >= 0.95
    assert set(got[got >= 0].tolist()) <= set(range(1500))  # only its own vectors
    assert idx.memory_usage()["tenant_graphs"] >= 2700 * TG.DEGREE * 4

    # Writes to the tenant are overlaid on its links: a vector it gains is found (scanned
    # exactly), one it loses is never returned, and nothing is relinked.
    idx.tenant_graph_min = 10**9  # no background relinking during these checks
    idx.grant([1500, 1501], "big", owner="other")
    idx.delete(got[:, 0][:5], owner="big")
    idx.tenant_graph_min = TG.MIN_SIZE
    got2, got2_d, plan = idx.search("big", q, 10, explain=True)
    assert plan.path == "tenant-graph"
    readable = set(range(1500)) - set(got[:, 0][:5].tolist()) | {1500, 1501}
    assert set(got2[got2 >= 0].tolist()) <= readable
    ids = np.array(sorted(readable))
    truth, truth_d = brute_force(x, ids, q, 10, "l2")
    assert recall(got2, got2_d, truth, truth_d) >= 0.95
    assert idx.link_tenants() == 0  # still usable: nothing relinked
    got3, _, plan = idx.search("big", x[1500:1502], 10, explain=True)
    assert plan.path == "tenant-graph" and got3[:, 0].tolist() == [1500, 1501]  # gained: found
    # A revoke too: the granted vector, searched for exactly, is gone at once.
    assert idx.revoke([1500], "big", owner="other") == 1
    got4, _, plan = idx.search("big", x[1500:1501], 10, explain=True)
    assert plan.path == "tenant-graph" and 1500 not in got4.ravel().tolist()
    assert set(got4[got4 >= 0].tolist()) <= readable - {1500}
    idx.check_invariants()


def test_links_overlay_random_writes_until_the_journal_overflows() -> None:
    """Inserts, deletes (their slots reused by later inserts), grants and revokes on a linked
    tenant: every search returns only what the tenant may read now and recall >= 0.95 against
    brute force over it; past the journal's limit the links are dropped (tree) and relinked."""
    idx, x, q = _data(8)
    assert idx.link_tenants() == 2
    rng = np.random.default_rng(3)
    vecs = {i: x[i] for i in range(8700)}
    big = set(range(1500))
    other = list(range(1500, 2700))
    nxt = 10_000
    tree = idx._tenant_tree("big")
    limit = tree.journal.limit
    changed = 0
    for step in range(40):
        op = step % 4
        if op == 0:  # insert a few near the queries (so they matter), into freed slots too
            new = (q[rng.integers(0, len(q), 4)] + rng.standard_normal((4, _D)) * 0.3).astype(
                np.float32
            )
            ids = list(range(nxt, nxt + 4))
            nxt += 4
            idx.insert(ids, new, owner="big")
            vecs.update(zip(ids, new, strict=True))
            big |= set(ids)
        elif op == 1:
            gone = rng.choice(sorted(i for i in big if i < 1500 or i >= 10_000), 3, replace=False)
            idx.delete(gone.tolist(), owner="big")
            big -= set(gone.tolist())
        elif op == 2:
            g = rng.choice(other, 3, replace=False).tolist()
            idx.grant(g, "big", owner="other")
            big |= set(g)
        else:
            have = sorted(i for i in big if 1500 <= i < 2700)
            if have:
                r = have[:2]
                idx.revoke(r, "big", owner="other")
                big -= set(r)
        changed += 4
        got, got_d, plan = idx.search("big", q, 10, explain=True)
        assert set(got[got >= 0].tolist()) <= big, step
        ids = np.array(sorted(big))
        truth, truth_d = brute_force(
            np.stack([vecs[i] for i in ids]), np.arange(len(ids)), q, 10, "l2"
        )
        truth = np.where(truth >= 0, ids[np.maximum(truth, 0)], -1)
        assert recall(got, got_d, truth, truth_d) >= 0.95, (step, plan)
        if tree.journal is not None:
            assert plan.path == "tenant-graph", step
    assert changed < limit or tree.journal is None
    # Overflow the journal: one delete of many of its vectors at once (it stays >= MIN_SIZE
    # and under the global graph's share of the collection).
    many = sorted(i for i in big if i < 1500)[:300]
    idx.delete(many, owner="big")
    assert tree.journal is None  # dropped: the tree serves until relinked
    _, _, plan = idx.search("big", q[:1], 10, explain=True)
    assert plan.path == "tree"
    assert idx.link_tenants() == 1
    _, _, plan = idx.search("big", q[:1], 10, explain=True)
    assert plan.path == "tenant-graph"
    idx.check_invariants()


def test_a_search_queues_the_links_in_the_background() -> None:
    idx, _, q = _data(6)
    _, _, plan = idx.search("other", q[:1], 10, explain=True)
    assert plan.path == "tree"  # not linked yet: queued
    deadline = time.monotonic() + 60
    while plan.path != "tenant-graph" and time.monotonic() < deadline:
        time.sleep(0.05)
        _, _, plan = idx.search("other", q[:1], 10, explain=True)
    assert plan.path == "tenant-graph"


def test_small_tenants_and_inner_product_take_no_links() -> None:
    idx, _, q = _data(7)
    idx.insert(np.arange(5000, 5100), q[:1].repeat(100, 0) + 0.1, owner="small")
    _, _, plan = idx.search("small", q, 10, explain=True)
    assert plan.path == "exact"
    ip = CuratorIndex(_D, "ip", IndexConfig(train_min_vectors=1000, max_sl_size=64))
    v = np.random.default_rng(1).standard_normal((8000, _D))
    ip.insert(np.arange(1500), v[:1500], owner="a")
    ip.insert(np.arange(1500, 8000), v[1500:], owner="b")
    assert ip.link_tenants() == 0  # no links where the global graph is not used either
    _, _, plan = ip.search("a", q, 10, explain=True)
    assert plan.path == "tree"


def test_a_tenant_written_and_searched_in_a_loop_queues_one_build() -> None:
    """While the builder is busy, every write replaces the tenant's view and every search asks
    for links: one pending build per tenant (its latest view), not one per write holding a
    superseded slot list; once the builder is free it links the latest view."""
    idx, x, q = _data(7)
    graphs = idx._tenant_graphs
    with cpu_budget.background_slot(urgent=True):  # the builder waits for a slot meanwhile
        for i in range(200):
            idx.insert([10**6 + i], x[i : i + 1] + 0.01, owner="big")
            _, _, plan = idx.search("big", q[:1], 10, explain=True)
            assert plan.path == "tree"
        assert len(graphs._pending) <= 1  # the builder may hold one taken job
        assert graphs._todo.qsize() <= 1  # and one queued key, not 200
    deadline = time.monotonic() + 60
    while plan.path != "tenant-graph" and time.monotonic() < deadline:
        time.sleep(0.05)
        _, _, plan = idx.search("big", q[:1], 10, explain=True)
    assert plan.path == "tenant-graph" and not graphs._pending


def test_a_tenant_on_the_graph_path_takes_its_own_links() -> None:
    """A tenant of 34 % of the collection is past the global graph's share: its own links
    (no filtered-out neighbours to walk past) serve it once built; the 66 % tenant keeps the
    global graph (planner.LINKS_MAX_SHARE)."""
    rng = np.random.default_rng(9)
    centers = rng.standard_normal((40, _D)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 40, 8700)] + rng.standard_normal((8700, _D))).astype(np.float32)
    idx = CuratorIndex(_D, "l2", IndexConfig(train_min_vectors=4000, max_sl_size=64))
    idx.insert(np.arange(3000), x[:3000], owner="a")
    idx.insert(np.arange(3000, 8700), x[3000:], owner="b")
    idx.build_graph()
    q = (centers[rng.integers(0, 40, 50)] + rng.standard_normal((50, _D))).astype(np.float32)
    idx.tenant_graph_min = 10**9
    _, _, plan = idx.search("a", q, 10, explain=True)
    assert plan.path == "graph"
    idx.tenant_graph_min = TG.MIN_SIZE
    assert idx.link_tenants() == 1  # "a" only
    got, got_d, plan = idx.search("a", q, 10, explain=True)
    assert plan.path == "tenant-graph"
    assert set(got[got >= 0].tolist()) <= set(range(3000))
    truth, truth_d = brute_force(x, np.arange(3000), q, 10, "l2")
    assert recall(got, got_d, truth, truth_d) >= 0.95
    _, _, plan = idx.search("b", q, 10, explain=True)
    assert plan.path == "graph"
