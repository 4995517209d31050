"""Which entries to evict when a quota is full: expired first, then the lowest utility.

utility = (1 + hits) x recency x cost, with recency = exp(-idle / tau): idle is the time since
the entry was stored or last hit, tau the category's TTL (its natural time scale), cost what a
hit saves (generation seconds and tokens). Within a tenant-wide quota every category keeps its
`floor_entries`, so a busy head category cannot evict a quiet tail category to nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from curator.cache.entry import EntryMeta
from curator.cache.policy import CategoryPolicy
from curator.errors import ResourceExhausted

__all__ = ["QuotaView", "eviction_order", "pick_victims", "plan_eviction"]


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


@dataclasses.dataclass(frozen=True)
class QuotaView:
    """What eviction planning reads of the cache: entry ids per (tenant, category), their
    bytes, every entry's meta, the policy of a (tenant, category), the tenant-wide quota
    (0 = none) and the slack (a full quota frees this fraction more, so it fills rarely)."""

    groups: Mapping[tuple[str, str], Mapping[int, None]]
    group_bytes: Mapping[tuple[str, str], int]
    tenant_totals: Mapping[str, tuple[int, int]]  # tenant -> (entries, bytes)
    metas: Mapping[int, EntryMeta]
    policy: Callable[[str, str], CategoryPolicy]
    tenant_max_entries: int
    tenant_max_bytes: int
    slack: float


def plan_eviction(
    view: QuotaView,
    group: tuple[str, str],
    policy: CategoryPolicy,
    n_new: int,
    size_new: int,
    now: float,
    replaced: list[int],
) -> np.ndarray:
    """Entry ids to evict so that `n_new` entries of `size_new` bytes in all fit the
    category's quota (`policy`) and the tenant's; `replaced` entries go anyway. Raises
    ResourceExhausted when the new entries alone exceed a byte quota."""
    tenant, category = group
    metas, slack = view.metas, view.slack
    gone = set(replaced)
    # Sizes from the running totals: the common case (room left) costs O(replaced), not
    # O(entries); lists of ids are built only when something has to go.
    in_group = view.groups.get(group, {})
    n_after = len(in_group) - sum(1 for i in gone if i in in_group) + n_new
    b_after = view.group_bytes.get(group, 0) + size_new
    b_after -= sum(metas[i].size for i in gone if i in in_group)
    victims: list[np.ndarray] = []
    if policy.quota_bytes and size_new > policy.quota_bytes:
        raise ResourceExhausted(
            f"expected entries within the category quota of {policy.quota_bytes} bytes, "
            f"got {size_new}"
        )
    if (policy.quota_entries and n_after > policy.quota_entries) or (
        policy.quota_bytes and b_after > policy.quota_bytes
    ):
        mine = [i for i in in_group if i not in gone]
        order, sizes = eviction_order(mine, metas, now, policy.ttl_s)
        need_n = n_after - int(policy.quota_entries * (1 - slack)) if policy.quota_entries else 0
        need_b = b_after - int(policy.quota_bytes * (1 - slack)) if policy.quota_bytes else 0
        victims.append(pick_victims(order, sizes, need_n, need_b))
        gone.update(victims[-1].tolist())
    cap_n, cap_b = view.tenant_max_entries, view.tenant_max_bytes
    if cap_b and size_new > cap_b:
        raise ResourceExhausted(
            f"expected entries within the tenant quota of {cap_b} bytes, got {size_new}"
        )
    total_n, total_b = view.tenant_totals.get(tenant, (0, 0))
    t_n = total_n - len(gone) + n_new
    t_b = total_b - sum(metas[i].size for i in gone) + size_new
    if (cap_n and t_n > cap_n) or (cap_b and t_b > cap_b):
        t_groups = [
            (g, [i for i in ids if i not in gone])
            for g, ids in view.groups.items()
            if g[0] == tenant
        ]
        orders, sizes_all, keys = [], [], []
        for (t, c), ids in t_groups:
            p = view.policy(t, c)
            o, s = eviction_order(ids, metas, now, p.ttl_s)
            # other categories keep their floor; the writing one may give up anything
            allowed = len(o) if c == category else max(0, len(o) - p.floor_entries)
            o, s = o[:allowed], s[:allowed]
            expired = np.fromiter((metas[i].expires <= now for i in o.tolist()), bool, len(o))
            # merge the categories' orders: expired anywhere first, then by rank in each
            keys.append(np.where(expired, -1.0, np.arange(len(o)) / max(len(o), 1)))
            orders.append(o)
            sizes_all.append(s)
        if orders:
            o = np.concatenate(orders)
            s = np.concatenate(sizes_all)
            merged = np.argsort(np.concatenate(keys), kind="stable")
            need_n = t_n - int(cap_n * (1 - slack)) if cap_n else 0
            need_b = t_b - int(cap_b * (1 - slack)) if cap_b else 0
            victims.append(pick_victims(o[merged], s[merged], need_n, need_b))
    if not victims:
        return np.empty(0, np.int64)
    return np.unique(np.concatenate(victims))
