"""Measurements shared by the benchmarks: recall with ties, latency, memory."""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable

import numpy as np
import psutil

__all__ = ["Timer", "latency_stats", "recall_at_k", "rss", "trim_memory"]


def recall_at_k(
    ids: np.ndarray,
    gt: np.ndarray,
    gt_dist: np.ndarray,
    dist: np.ndarray,
    k: int = 10,
    eps: float = 1e-4,
) -> float:
    """Mean recall@k; a returned id counts when it is a true top-k id or its distance ties
    the k-th true distance (within eps). Divides by min(k, number of true neighbours)."""
    total = 0.0
    for r in range(len(ids)):
        truth = gt[r, :k][gt[r, :k] >= 0]
        if not len(truth):
            total += 1.0
            continue
        kth = gt_dist[r, len(truth) - 1]
        got = ids[r][ids[r] >= 0]
        hits = np.isin(got, truth) | (dist[r][: len(got)] <= kth + eps)
        total += min(int(hits.sum()), len(truth)) / len(truth)
    return total / max(1, len(ids))


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
