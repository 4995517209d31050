"""CuratorIndex search: recall against brute force, exactness for small tenants, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig, SearchParams
from tests.conftest import MultiTenant, brute_force, make_data, recall

CFG = IndexConfig(train_min_vectors=2000, branching=16, max_leaf_size=64, max_sl_size=64)


def build(data: MultiTenant, metric: str, config: IndexConfig = CFG) -> CuratorIndex:
    idx = CuratorIndex(data.x.shape[1], metric, config)
    for t in np.unique(data.owner):
        rows = np.flatnonzero(data.owner == t)
        idx.insert(rows, data.x[rows], owner=f"t{t}")
    for name, ids in data.readers.items():
        idx.grant(ids, name)
    return idx


@pytest.fixture(scope="module", params=["l2", "ip", "cosine"])
def indexed(request: pytest.FixtureRequest, data: MultiTenant) -> tuple[CuratorIndex, str]:
    return build(data, request.param), request.param


@pytest.mark.timeout(120)
def test_recall_at_default_parameters(indexed, data: MultiTenant) -> None:
    idx, metric = indexed
    assert idx.is_trained
    big = [t for t, ids in data.readers.items() if len(ids) > 1024]
    assert big, "the data must have tenants large enough for the tree path"
    for tenant, ids in data.readers.items():
        q = data.queries[:40]
        got, got_d = idx.search(tenant, q, 10)
        truth, truth_d = brute_force(data.x, ids, q, 10, metric)
        r = recall(got, got_d, truth, truth_d)
        assert r >= 0.95, (tenant, len(ids), r)
        assert np.isin(got[got >= 0], ids).all(), "a result the tenant may not read"


def test_small_tenants_are_exact(indexed, data: MultiTenant) -> None:
    idx, metric = indexed
    small = [(t, ids) for t, ids in data.readers.items() if len(ids) <= 1024]
    assert small
    for tenant, ids in small:
        got, got_d = idx.search(tenant, data.queries[:20], 10)
        truth, truth_d = brute_force(data.x, ids, data.queries[:20], 10, metric)
        np.testing.assert_allclose(got_d, truth_d, rtol=1e-4, atol=1e-4)
        assert recall(got, got_d, truth, truth_d, tol=1e-5) == 1.0


def test_untrained_index_is_exact() -> None:
    d = make_data(n=1500, d=16, n_tenants=5, seed=3)
    idx = build(d, "l2", IndexConfig())  # default train_min_vectors: never trained here
    assert not idx.is_trained
    for tenant, ids in d.readers.items():
        _, got_d = idx.search(tenant, d.queries[:10], 5, SearchParams(exact_search_threshold=0))
        _, truth_d = brute_force(d.x, ids, d.queries[:10], 5, "l2")
        np.testing.assert_allclose(got_d, truth_d, rtol=1e-4, atol=1e-3)


def test_union_and_intersection_of_tenants(indexed, data: MultiTenant) -> None:
    idx, metric = indexed
    a, b = "t0", "t3"
    union = np.union1d(data.readers[a], data.readers[b])
    both = np.intersect1d(data.readers[a], data.readers[b])
    assert len(both) > 0
    q = data.queries[:30]
    got, got_d = idx.search([a, b], q, 10)
    truth, truth_d = brute_force(data.x, union, q, 10, metric)
    assert np.isin(got[got >= 0], union).all()
    assert recall(got, got_d, truth, truth_d) >= 0.95
    for row in got:  # no id twice
        assert len(set(row[row >= 0].tolist())) == len(row[row >= 0])
    got, got_d = idx.search_and((a, b), q, 10)
    truth, truth_d = brute_force(data.x, both, q, 10, metric)
    assert np.isin(got[got >= 0], both).all()
    assert recall(got, got_d, truth, truth_d) >= 0.95


def test_batch_equals_single_queries(indexed, data: MultiTenant) -> None:
    idx, _ = indexed
    q = data.queries[:32]
    batch_ids, batch_d = idx.search("t0", q, 10)
    for i in range(len(q)):
        ids, dist = idx.search("t0", q[i : i + 1], 10)
        np.testing.assert_array_equal(ids[0], batch_ids[i])
        np.testing.assert_allclose(dist[0], batch_d[i], rtol=1e-5, atol=1e-5)


def test_padding_when_a_tenant_has_fewer_than_k(data: MultiTenant) -> None:
    idx = CuratorIndex(4, "l2")
    idx.insert([7, 8], np.eye(4, dtype=np.float32)[:2], owner="tiny")
    ids, dist = idx.search("tiny", np.zeros((3, 4), np.float32), k=5)
    assert ids.shape == (3, 5) and ids.dtype == np.int64 and dist.dtype == np.float32
    assert (ids[:, 2:] == -1).all() and np.isinf(dist[:, 2:]).all()
    assert sorted(ids[0, :2].tolist()) == [7, 8]
    idx.add_tenant("empty")
    ids, dist = idx.search("empty", np.zeros((1, 4), np.float32), k=3)
    assert (ids == -1).all() and np.isinf(dist).all()


def test_search_after_writes_sees_them() -> None:
    data = make_data(n=6000, d=16, n_tenants=8, seed=5)
    idx = build(data, "l2", IndexConfig(train_min_vectors=1000, max_sl_size=32))
    probe = data.queries[:1] + 1000.0  # far from everything else
    idx.insert([10**12], probe, owner="t5")
    assert idx.search("t5", probe, 1)[0][0, 0] == 10**12
    assert 10**12 not in idx.search("t6", probe, 50)[0]
    idx.grant([10**12], "t6")
    assert idx.search("t6", probe, 1)[0][0, 0] == 10**12
    idx.revoke([10**12], "t6")
    assert 10**12 not in idx.search("t6", probe, 50)[0]
    idx.delete([10**12])
    assert 10**12 not in idx.search("t5", probe, 50)[0]
    idx.check_invariants()


def test_large_ids_round_trip() -> None:
    idx = CuratorIndex(2, "l2")
    big = np.array([2**64 - 2, 2**63, 0], np.uint64)
    idx.insert(big, np.eye(3, 2, dtype=np.float32), owner="a")
    ids, _ = idx.search("a", np.array([[1, 0]], np.float32), 3)
    assert sorted(ids[0].view(np.uint64).tolist()) == sorted(big.tolist())
