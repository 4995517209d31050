"""Benchmark datasets: the real Debian data (tenants or labels) and a seeded synthetic set
following the Curator paper's YFCC recipe (several tenants per vector)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

__all__ = ["DATA", "Dataset", "debian", "shrink", "synthetic"]

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian"
CACHE = Path(__file__).resolve().parent / "out" / "cache"


@dataclass
class Dataset:
    """base (n, d) float32; access list of vector i: tenants[indptr[i]:indptr[i+1]] (the first
    one is its owner); queries (nq, d) with one tenant each; gt (nq, >=10) exact ids within the
    query's tenant (-1 padded) and gt_dist their distances (for ties)."""

    name: str
    metric: str
    base: np.ndarray
    indptr: np.ndarray
    tenants: np.ndarray
    queries: np.ndarray
    query_tenant: np.ndarray
    gt: np.ndarray
    gt_dist: np.ndarray
    n_tenants: int

    @property
    def grants(self) -> int:
        return len(self.tenants)

    @cached_property
    def _grant_keys(self) -> np.ndarray:
        rows = np.repeat(np.arange(len(self.base), dtype=np.int64), np.diff(self.indptr))
        return np.sort(rows * self.n_tenants + self.tenants)

    def can_read(self, ids: np.ndarray, tenants: np.ndarray) -> np.ndarray:
        """Bool (nq, k): may tenants[i] (nq,) read vector ids[i, j] ((nq, k), -1 -> False)."""
        keys = np.maximum(ids, 0) * self.n_tenants + np.asarray(tenants)[:, None]
        pos = np.minimum(np.searchsorted(self._grant_keys, keys), len(self._grant_keys) - 1)
        return (ids >= 0) & (ids < len(self.base)) & (self._grant_keys[pos] == keys)

    def tenant_lists(self) -> list[np.ndarray]:
        """Vector ids of every tenant."""
        owner_rows = np.repeat(np.arange(len(self.base)), np.diff(self.indptr))
        order = np.argsort(self.tenants, kind="stable")
        bounds = np.searchsorted(self.tenants[order], np.arange(self.n_tenants + 1))
        rows = owner_rows[order]
        return [rows[bounds[t] : bounds[t + 1]] for t in range(self.n_tenants)]


def debian(kind: str = "tenant", max_queries: int = 2000) -> Dataset:
    """Tenants = maintainers (kind="tenant") or labels = sections and debtags ("label")."""
    base = np.load(DATA / "base.npy").astype(np.float32)
    queries = np.load(DATA / "queries.npy")[:max_queries]
    if kind == "tenant":
        owner = np.load(DATA / "base_tenant.npy").astype(np.int64)
        indptr, tenants = np.arange(len(base) + 1), owner
        qt = np.load(DATA / "query_tenant.npy")[:max_queries]
        gt, gs = np.load(DATA / "gt_ids.npy"), np.load(DATA / "gt_scores.npy")
    else:
        indptr = np.load(DATA / "base_labels_indptr.npy")
        tenants = np.load(DATA / "base_labels_indices.npy").astype(np.int64)
        qt = np.load(DATA / "query_label.npy")[:max_queries]
        gt, gs = np.load(DATA / "gt_label_ids.npy"), np.load(DATA / "gt_label_scores.npy")
    n_tenants = int(tenants.max()) + 1
    gt, gs = gt[:max_queries], gs[:max_queries]
    return Dataset(
        f"debian-{kind}",
        "cosine",
        base,
        indptr,
        tenants,
        queries,
        qt.astype(np.int64),
        gt.astype(np.int64),
        (1 - gs).astype(np.float32),
        n_tenants,
    )


def synthetic(
    n: int = 1_000_000,
    d: int = 128,
    n_tenants: int = 1000,
    n_queries: int = 1000,
    seed: int = 20261124,
) -> Dataset:
    """Clustered vectors; each vector carries 1 + Poisson(2) tenants, drawn with a Zipf-like
    popularity and a preference for tenants tied to the vector's cluster (tags follow
    content). Queries are held-out vectors, asked once per tenant in their list (capped)."""
    key = hashlib.sha1(f"{n}-{d}-{n_tenants}-{n_queries}-{seed}".encode()).hexdigest()[:12]
    path = CACHE / f"synthetic-{key}.npz"
    if path.exists():
        z = np.load(path)
        return Dataset(
            f"synthetic-{n}",
            "l2",
            *(
                z[k]
                for k in ("base", "indptr", "tenants", "queries", "query_tenant", "gt", "gt_dist")
            ),
            n_tenants,
        )
    rng = np.random.default_rng(seed)
    n_clusters = 1024
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32) * 2.0
    spread = rng.uniform(0.6, 1.4, n_clusters).astype(np.float32)
    popularity = 1.0 / np.arange(1, n_tenants + 1) ** 0.9
    popularity /= popularity.sum()
    local = rng.integers(0, n_tenants, (n_clusters, 8))  # tenants tied to each cluster

    def draw(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = rng.integers(0, n_clusters, m)
        x = centers[c] + rng.standard_normal((m, d)).astype(np.float32) * spread[c, None]
        counts = 1 + rng.poisson(2.0, m)
        lists = []
        for i in range(m):
            k = counts[i]
            from_local = rng.random(k) < 0.5
            picks = np.where(
                from_local,
                local[c[i], rng.integers(0, 8, k)],
                rng.choice(n_tenants, k, p=popularity),
            )
            lists.append(np.unique(picks))
        indptr = np.zeros(m + 1, np.int64)
        np.cumsum([len(t) for t in lists], out=indptr[1:])
        return x.astype(np.float32), indptr, np.concatenate(lists).astype(np.int64)

    log.info("generating %d x %d synthetic vectors", n, d)
    base, indptr, tenants = draw(n)
    qx, qptr, qten = draw(n_queries)
    rows = np.repeat(np.arange(n_queries), np.diff(qptr))
    pick = rng.permutation(len(rows))[: 2 * n_queries]
    queries, query_tenant = qx[rows[pick]], qten[pick]
    ds = Dataset(
        f"synthetic-{n}",
        "l2",
        base,
        indptr,
        tenants,
        queries,
        query_tenant,
        np.empty(0),
        np.empty(0),
        n_tenants,
    )
    ds.gt, ds.gt_dist = ground_truth(ds)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        base=base,
        indptr=indptr,
        tenants=tenants,
        queries=queries,
        query_tenant=query_tenant,
        gt=ds.gt,
        gt_dist=ds.gt_dist,
    )
    return ds


def ground_truth(ds: Dataset, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k within each query's tenant (squared L2), by faiss per tenant."""
    lists = ds.tenant_lists()
    gt = np.full((len(ds.queries), k), -1, np.int64)
    dist = np.full((len(ds.queries), k), np.inf, np.float32)
    for t in tqdm(np.unique(ds.query_tenant), desc="ground truth", unit="tenant", leave=False):
        qrows = np.flatnonzero(ds.query_tenant == t)
        members = lists[t]
        flat = faiss.IndexFlatL2(ds.base.shape[1])
        flat.add(ds.base[members])
        dd, ii = flat.search(ds.queries[qrows], min(k, len(members)))
        gt[qrows, : ii.shape[1]] = np.where(ii >= 0, members[np.maximum(ii, 0)], -1)
        dist[qrows, : dd.shape[1]] = dd
    return gt, dist


def shrink(ds: Dataset, max_rows: int, max_queries: int, seed: int = 0) -> Dataset:
    """A smaller dataset that keeps the ground truth exact: whole tenants, drawn at random among
    the queried ones until about max_rows vectors, with every vector of each chosen tenant (so a
    query's top-100 within its tenant is unchanged) and access lists cut to the chosen tenants.
    Ids and tenants are renumbered; at most max_queries queries of the chosen tenants are kept."""
    rng = np.random.default_rng(seed)
    lists = ds.tenant_lists()
    chosen: list[int] = []
    rows = 0
    for t in rng.permutation(np.unique(ds.query_tenant)):
        if rows + len(lists[t]) > max_rows and chosen:
            continue
        chosen.append(int(t))
        rows += len(lists[t])
    keep_tenant = np.full(ds.n_tenants, -1, np.int64)
    keep_tenant[chosen] = np.arange(len(chosen))
    entry_rows = np.repeat(np.arange(len(ds.base)), np.diff(ds.indptr))
    new_t = keep_tenant[ds.tenants]
    entries = new_t >= 0  # entries stay grouped by row, the owner (first kept) first
    kept_rows = np.unique(entry_rows[entries])
    new_id = np.full(len(ds.base), -1, np.int64)
    new_id[kept_rows] = np.arange(len(kept_rows))
    indptr = np.zeros(len(kept_rows) + 1, np.int64)
    np.cumsum(np.bincount(new_id[entry_rows[entries]], minlength=len(kept_rows)), out=indptr[1:])
    q = np.flatnonzero(keep_tenant[ds.query_tenant] >= 0)[:max_queries]
    gt = np.where(ds.gt[q] >= 0, new_id[np.maximum(ds.gt[q], 0)], -1)
    return Dataset(
        f"{ds.name}-tiny",
        ds.metric,
        ds.base[kept_rows],
        indptr,
        new_t[entries],
        ds.queries[q],
        keep_tenant[ds.query_tenant[q]],
        gt,
        ds.gt_dist[q],
        len(chosen),
    )
