"""Shared fixtures: seeded synthetic multi-tenant data and a brute-force reference."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

# LiteLLM fetches its model cost map from the internet at import unless told not to; tests
# reach nothing but loopback.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass
class MultiTenant:
    """x (n, d) float32; readers[t]: sorted ids tenant t may read (owner first in `owner`)."""

    x: np.ndarray
    owner: np.ndarray
    readers: dict[str, np.ndarray]
    queries: np.ndarray


def make_data(
    n: int = 24_000, d: int = 32, n_tenants: int = 30, seed: int = 0, share: float = 0.5
) -> MultiTenant:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d)).astype(np.float32) * 3
    c = rng.integers(0, 64, n)
    x = (centers[c] + rng.standard_normal((n, d))).astype(np.float32)
    sizes = 1.0 / np.arange(1, n_tenants + 1) ** 1.1  # Zipf-like tenant sizes
    owner = rng.choice(n_tenants, n, p=sizes / sizes.sum())
    members = {t: set(np.flatnonzero(owner == t).tolist()) for t in range(n_tenants)}
    shared = np.flatnonzero(rng.random(n) < share)
    for i in shared:  # a second (and sometimes third) tenant reads half of the vectors
        for t in rng.choice(n_tenants, rng.integers(1, 3), replace=False):
            members[int(t)].add(int(i))
    readers = {f"t{t}": np.array(sorted(m), np.int64) for t, m in members.items()}
    queries = (centers[rng.integers(0, 64, 300)] + rng.standard_normal((300, d))).astype(np.float32)
    return MultiTenant(x, owner, readers, queries)


@pytest.fixture(scope="session")
def data() -> MultiTenant:
    return make_data()


def distances(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """(nq, n) distances in the index's convention (smaller is closer)."""
    if metric == "l2":
        return ((q[:, None, :] - x[None]) ** 2).sum(-1)
    if metric == "ip":
        return -(q @ x.T)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return 1 - qn @ xn.T


def brute_force(
    x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among rows `ids` of x: (ids (nq, k), distances (nq, k)), -1/inf padded."""
    dist = distances(x[ids], q, metric)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out_ids = np.full((len(q), k), -1, np.int64)
    out_d = np.full((len(q), k), np.inf, np.float32)
    out_ids[:, : order.shape[1]] = ids[order]
    out_d[:, : order.shape[1]] = np.take_along_axis(dist, order, 1)
    return out_ids, out_d


def recall(
    got: np.ndarray, got_d: np.ndarray, truth: np.ndarray, truth_d: np.ndarray, tol: float = 1e-3
) -> float:
    """Mean recall@k with ties counted as hits (a returned id whose distance is within tol of
    the k-th true distance)."""
    total = 0.0
    for g, gd, t, td in zip(got, got_d, truth, truth_d, strict=True):
        valid = t[t >= 0]
        if not len(valid):
            total += 1.0
            continue
        kth = td[len(valid) - 1]
        ok = np.isin(g, valid) | ((g >= 0) & (gd <= kth + tol * max(1.0, abs(kth))))
        total += min(int(ok.sum()), len(valid)) / len(valid)
    return total / len(got)
