"""Measurements shared by the benchmarks: recall with ties, latency, memory."""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable

import numpy as np
import psutil

__all__ = [
    "Timer",
    "latency_stats",
    "recall_at_k",
    "rss",
    "time_each",
    "trim_memory",
    "true_distances",
]


def recall_at_k(
    ids: np.ndarray,
    gt: np.ndarray,
    gt_dist: np.ndarray,
    dist: np.ndarray,
    k: int = 10,
    eps: float = 1e-4,
) -> float:
    """Mean recall@k of ids (nq, >=k) int64, -1 padded, against gt (nq, >=k) / gt_dist.

    dist (nq, >=k) must be the TRUE distances of the returned ids (see `true_distances`), not
    the ones the index reports, or a wrong id with a small claimed distance would count. A
    returned id counts when it is a true top-k id or its distance ties the k-th true distance
    (within eps, relative to that distance's scale); each id counts once. Divides by min(k,
    number of true neighbours).
    """
    total = 0.0
    for r in range(len(ids)):
        truth = gt[r, :k][gt[r, :k] >= 0]
        if not len(truth):
            total += 1.0
            continue
        kth = gt_dist[r, len(truth) - 1]
        valid = ids[r, :k] >= 0
        got, first = np.unique(ids[r, :k][valid], return_index=True)
        got_dist = dist[r, :k][valid][first]
        hits = np.isin(got, truth) | (got_dist <= kth + eps * max(1.0, abs(float(kth))))
        total += min(int(hits.sum()), len(truth)) / len(truth)
    return total / max(1, len(ids))


def true_distances(
    base: np.ndarray, metric: str, queries: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """Distances (nq, k) float32 from queries (nq, d) to base[ids] (ids (nq, k), -1 -> inf), in
    the datasets' convention: squared L2 for "l2", 1 - <q, x> for "ip", 1 - cos for "cosine"."""
    safe = np.maximum(ids, 0)
    x = base[safe].astype(np.float64)  # (nq, k, d)
    q = queries.astype(np.float64)[:, None, :]
    if metric == "l2":
        d = ((x - q) ** 2).sum(-1)
    else:
        if metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)
            q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-30)
        d = 1.0 - (x * q).sum(-1)
    return np.where(ids >= 0, d, np.inf).astype(np.float32)


def latency_stats(seconds: list[float] | np.ndarray) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
    }


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def trim_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS deltas start clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


def time_each(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out
