"""Compiled steps of the write path (numba, cached on disk): edits of a tenant's shortlists
and of its cached search view that would otherwise be several numpy calls on tiny arrays
(~1 µs each) per write."""

from __future__ import annotations

import numba
import numpy as np

from curator.index.tree import _leaf_of

__all__ = ["drop_slots", "patch_view_one", "place_one", "sq_norms"]


@numba.njit(cache=True, nogil=True)
def _sq_norm(v):  # pragma: no cover - compiled
    acc = 0.0  # float64, in order: every path that stores a row computes it the same way
    for j in range(v.shape[0]):
        acc += np.float64(v[j]) * np.float64(v[j])
    return np.float32(acc)


@numba.njit(cache=True, nogil=True)
def sq_norms(x):  # pragma: no cover - compiled
    """Squared L2 norms (n,) float32 of the rows of x (n, d) float32."""
    out = np.empty(x.shape[0], np.float32)
    for i in range(x.shape[0]):
        out[i] = _sq_norm(x[i])
    return out


@numba.njit(cache=True, nogil=True)
def place_one(
    x, centroids, cnorm, child_start, child_count, anc, rad_sum, rad_cnt, vectors, vnorm, slot
):  # pragma: no cover - compiled
    """One new vector x (d,) float32 in one call: routed to its leaf (as SharedTree.route),
    added to the radius statistics of the nodes on its path (as update_radius) and written
    to row `slot` of the store (vectors, vnorm). Returns the leaf."""
    leaf = _leaf_of(x, centroids, cnorm, child_start, child_count)
    for j in range(anc.shape[1]):
        node = anc[leaf, j]
        if node < 0:
            break
        sq = 0.0
        for c in range(x.shape[0]):
            diff = x[c] - centroids[node, c]
            sq += diff * diff
        rad_sum[node] += sq
        rad_cnt[node] += 1
    vectors[slot, :] = x
    vnorm[slot] = _sq_norm(x)
    return leaf


@numba.njit(cache=True, nogil=True)
def patch_view_one(node, sl_ptr, slots, at, slot, sign):  # pragma: no cover - compiled
    """A view's (sl_ptr, slots) with `slot` inserted into (sign > 0) or removed from (sign < 0)
    the sorted shortlist of shared node `at`, as new arrays (a search may hold the old ones).
    Returns (ok, sl_ptr, slots); ok is False, and the arrays empty, if `at` is not a node of
    the view or the slot to remove is not in its shortlist."""
    p = np.searchsorted(node, at)
    if p >= node.shape[0] or node[p] != at:
        return False, sl_ptr[:0], slots[:0]
    a, b = sl_ptr[p], sl_ptr[p + 1]
    pos = a + np.searchsorted(slots[a:b], slot)
    n = slots.shape[0]
    if sign > 0:
        out = np.empty(n + 1, np.int32)
        out[:pos] = slots[:pos]
        out[pos] = slot
        out[pos + 1 :] = slots[pos:]
    else:
        if pos >= b or slots[pos] != slot:
            return False, sl_ptr[:0], slots[:0]
        out = np.empty(n - 1, np.int32)
        out[:pos] = slots[:pos]
        out[pos:] = slots[pos + 1 :]
    ptr = sl_ptr.copy()
    for i in range(p + 1, ptr.shape[0]):
        ptr[i] += sign
    return True, ptr, out


@numba.njit(cache=True, nogil=True)
def drop_slots(sl, gone):  # pragma: no cover - compiled
    """`sl` (n,) int32 without the slots of `gone` (m,) int32, sorted ascending; returns
    (kept (n - found,) int32 in sl's order, found: how many of sl were in gone)."""
    out = np.empty(sl.shape[0], np.int32)
    k = 0
    m = gone.shape[0]
    for i in range(sl.shape[0]):
        p = np.searchsorted(gone, sl[i])
        if p < m and gone[p] == sl[i]:
            continue
        out[k] = sl[i]
        k += 1
    return out[:k], sl.shape[0] - k
