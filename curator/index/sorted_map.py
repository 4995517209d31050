"""A compact, batch-oriented sorted map from 64-bit keys to 64-bit values.

Python dicts cost ~160 bytes an entry; this costs ~17 (a key, a value and a tombstone byte).
Keys live in a large sorted `main` array plus a small sorted `delta` that absorbs writes; the
delta is merged into main (O(n)) once it outgrows ~sqrt(n), so a write costs O(sqrt(n)) amortised
and a lookup two binary searches. Deletions in main are tombstones, dropped at the next merge.
Every operation takes and returns numpy arrays.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["SortedMap"]

_MIN_DELTA = 4096


class SortedMap:
    """Map int64 keys to int64 values (-1 = absent), or a key set when `values=False`."""

    def __init__(self, values: bool = True) -> None:
        self._with_values = values
        self._mk = np.empty(0, np.int64)  # main keys, sorted
        self._mv = np.empty(0, np.int64)  # main values
        self._alive = np.empty(0, bool)  # main tombstones
        self._dk = np.empty(0, np.int64)  # delta keys, sorted
        self._dv = np.empty(0, np.int64)
        self._n_dead = 0

    def __len__(self) -> int:
        return len(self._mk) - self._n_dead + len(self._dk)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._mk, self._mv, self._alive, self._dk, self._dv))

    # -- lookups -------------------------------------------------------------------------
    def _find_main(self, keys: np.ndarray) -> np.ndarray:
        """Positions in main of live `keys`, -1 where absent."""
        return _find(self._mk, self._alive, True, keys)

    def _find_delta(self, keys: np.ndarray) -> np.ndarray:
        return _find(self._dk, self._alive, False, keys)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Values of `keys` (n,) int64; -1 where absent (or 1 for present keys of a key set)."""
        keys = np.asarray(keys, np.int64)
        out = np.full(len(keys), -1, np.int64)
        pm = self._find_main(keys)
        m = pm >= 0
        out[m] = self._mv[pm[m]] if self._with_values else 1
        pd = self._find_delta(keys)
        d = pd >= 0
        out[d] = self._dv[pd[d]] if self._with_values else 1
        return out

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self.get(keys) >= 0 if self._with_values else self.get(keys) == 1

    def range(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All live keys k with lo[i] <= k < hi[i]; returns (keys, values), sorted by key
        when the ranges are sorted and disjoint."""
        lo = np.asarray(lo, np.int64)
        hi = np.asarray(hi, np.int64)
        parts_k, parts_v = [], []
        for keys, vals, alive in ((self._mk, self._mv, self._alive), (self._dk, self._dv, None)):
            s = np.searchsorted(keys, lo)
            e = np.searchsorted(keys, hi)
            idx = _ranges(s, e)
            if alive is not None:
                idx = idx[alive[idx]]
            parts_k.append(keys[idx])
            parts_v.append(vals[idx] if self._with_values else np.ones(len(idx), np.int64))
        k = np.concatenate(parts_k)
        v = np.concatenate(parts_v)
        order = np.argsort(k, kind="stable")
        return k[order], v[order]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All live (keys, values), sorted by key."""
        self._merge()
        return self._mk.copy(), (self._mv.copy() if self._with_values else np.ones_like(self._mk))

    # -- updates -------------------------------------------------------------------------
    def put(self, keys: np.ndarray, values: np.ndarray | None = None) -> None:
        """Insert or overwrite; `keys` must be unique within the call."""
        keys = np.asarray(keys, np.int64)
        vals = np.ones(len(keys), np.int64) if values is None else np.asarray(values, np.int64)
        pm = self._find_main(keys)
        m = pm >= 0
        if self._with_values:
            self._mv[pm[m]] = vals[m]
        pd = self._find_delta(keys)
        d = pd >= 0
        if self._with_values:
            self._dv[pd[d]] = vals[d]
        new = ~(m | d)
        if new.any():
            nk, nv = keys[new], vals[new]
            order = np.argsort(nk, kind="stable")
            nk, nv = nk[order], nv[order]
            at = np.searchsorted(self._dk, nk)
            self._dk = np.insert(self._dk, at, nk)
            self._dv = np.insert(self._dv, at, nv) if self._with_values else self._dv
            if len(self._dk) > max(_MIN_DELTA, 4 * int(np.sqrt(len(self._mk)))):
                self._merge()

    def remove(self, keys: np.ndarray) -> int:
        """Delete keys that are present; returns how many were."""
        keys = np.asarray(keys, np.int64)
        pm = self._find_main(keys)
        pm = pm[pm >= 0]
        self._alive[pm] = False
        self._n_dead += len(pm)
        pd = self._find_delta(keys)
        pd = pd[pd >= 0]
        if len(pd):
            self._dk = np.delete(self._dk, pd)
            if self._with_values:
                self._dv = np.delete(self._dv, pd)
        if self._n_dead > len(self._mk) // 4 + _MIN_DELTA:
            self._merge()
        return len(pm) + len(pd)

    def _merge(self) -> None:
        if not len(self._dk) and not self._n_dead:
            return
        mk, mv = self._mk, self._mv
        if self._n_dead:
            mk, mv = mk[self._alive], (mv[self._alive] if self._with_values else mv)
        at = np.searchsorted(mk, self._dk)
        self._mk = np.insert(mk, at, self._dk)
        self._mv = np.insert(mv, at, self._dv) if self._with_values else np.empty(0, np.int64)
        self._alive = np.ones(len(self._mk), bool)
        self._dk = np.empty(0, np.int64)
        self._dv = np.empty(0, np.int64)
        self._n_dead = 0

    @classmethod
    def from_sorted(cls, keys: np.ndarray, values: np.ndarray | None = None) -> SortedMap:
        """Build from unique keys sorted ascending (e.g. a snapshot)."""
        m = cls(values=values is not None)
        m._mk = np.ascontiguousarray(keys, np.int64)
        m._mv = np.ascontiguousarray(values, np.int64) if values is not None else m._mv
        m._alive = np.ones(len(m._mk), bool)
        return m


@numba.njit(cache=True, nogil=True)
def _find(sorted_keys, alive, use_alive, keys):  # pragma: no cover - compiled
    """Binary search of each key; its position, or -1 if absent (or dead, with use_alive)."""
    out = np.empty(keys.shape[0], np.int64)
    n = sorted_keys.shape[0]
    for i in range(keys.shape[0]):
        p = np.searchsorted(sorted_keys, keys[i])
        if p < n and sorted_keys[p] == keys[i] and (not use_alive or alive[p]):
            out[i] = p
        else:
            out[i] = -1
    return out


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each pair, without a Python loop."""
    lens = np.maximum(ends - starts, 0)
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offsets = np.repeat(starts - np.cumsum(lens) + lens, lens)
    return offsets + np.arange(total, dtype=np.int64)
