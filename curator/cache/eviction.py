"""Which entries to evict when a quota is full: expired first, then the lowest utility.

utility = (1 + hits) x recency x cost, with recency = exp(-idle / tau): idle is the time since
the entry was stored or last hit, tau the category's TTL (its natural time scale), cost what a
hit saves (generation seconds and tokens). Within a tenant-wide quota every category keeps its
`floor_entries`, so a busy head category cannot evict a quiet tail category to nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from curator.cache.entry import EntryMeta

__all__ = ["eviction_order", "pick_victims"]


def eviction_order(
    ids: Iterable[int], metas: Mapping[int, EntryMeta], now: float, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """(ids in eviction order (n,) int64, their sizes (n,) int64): expired entries first
    (earliest expiry first), then ascending utility."""
    id_arr = np.fromiter(ids, np.int64)
    if not len(id_arr):
        return id_arr, np.empty(0, np.int64)
    ms = [metas[i] for i in id_arr.tolist()]
    expires = np.fromiter((m.expires for m in ms), np.float64, len(ms))
    last = np.fromiter((max(m.created, m.last_hit) for m in ms), np.float64, len(ms))
    hits = np.fromiter((m.hits for m in ms), np.float64, len(ms))
    cost = np.fromiter((m.cost for m in ms), np.float64, len(ms))
    size = np.fromiter((m.size for m in ms), np.int64, len(ms))
    utility = (1 + hits) * np.exp(-np.maximum(now - last, 0) / max(tau, 1e-9)) * cost
    expired = expires <= now
    # Primary key: not expired (0 first); secondary: expiry time for expired, utility else.
    order = np.lexsort((np.where(expired, expires, utility), ~expired))
    return id_arr[order], size[order]


def pick_victims(
    order: np.ndarray, sizes: np.ndarray, need_entries: int, need_bytes: int
) -> np.ndarray:
    """The shortest prefix of `order` that frees `need_entries` entries and `need_bytes`."""
    n = max(need_entries, 0)
    if need_bytes > 0 and len(order):
        by_bytes = int(np.searchsorted(np.cumsum(sizes), need_bytes)) + 1
        n = max(n, by_bytes)
    return order[: min(n, len(order))]
