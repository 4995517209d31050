"""A compact, batch-oriented sorted map from 64-bit keys to 64-bit values.

Python dicts cost ~160 bytes an entry; this costs ~17 (a key, a value and a tombstone byte).
Keys live in a large sorted `main` array plus a small sorted `delta` that absorbs writes; the
delta is merged into main (O(n)) once it outgrows ~sqrt(n), so a write costs O(sqrt(n)) amortised
and a lookup two binary searches. Deletions in main are tombstones, dropped at the next merge.
Every operation takes and returns numpy arrays. A small `put` (the write path: one vector
and its grants) runs as one compiled call into a delta buffer with spare room, instead of
~10 numpy calls and a reallocation.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["SortedMap"]

_MIN_DELTA = 4096

#: Puts of at most this many keys take the compiled path (each new key shifts the delta
#: buffer: O(delta) per key, cheaper than sorting and reallocating for a few keys).
_SMALL_PUT = 64


class SortedMap:
    """Map int64 keys to int64 values (-1 = absent), or a key set when `values=False`."""

    def __init__(self, values: bool = True) -> None:
        self._with_values = values
        self._mk = np.empty(0, np.int64)  # main keys, sorted
        self._mv = np.empty(0, np.int64)  # main values
        self._alive = np.empty(0, bool)  # main tombstones
        self._dkb = np.empty(16, np.int64)  # delta keys, sorted, in a buffer: [:_dn] used
        self._dvb = np.empty(16 if values else 0, np.int64)
        self._dn = 0
        self._n_dead = 0
        self._limit = _MIN_DELTA  # delta length past which it is merged into main

    @property
    def _dk(self) -> np.ndarray:
        return self._dkb[: self._dn]

    @_dk.setter
    def _dk(self, keys: np.ndarray) -> None:
        self._dkb = keys
        self._dn = len(keys)

    @property
    def _dv(self) -> np.ndarray:
        return self._dvb[: self._dn] if self._with_values else self._dvb

    @_dv.setter
    def _dv(self, vals: np.ndarray) -> None:
        self._dvb = vals

    def __len__(self) -> int:
        return len(self._mk) - self._n_dead + len(self._dk)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._mk, self._mv, self._alive, self._dkb, self._dvb))

    # -- lookups -------------------------------------------------------------------------
    def _find_main(self, keys: np.ndarray) -> np.ndarray:
        """Positions in main of live `keys`, -1 where absent."""
        return _find(self._mk, self._alive, True, keys)

    def _find_delta(self, keys: np.ndarray) -> np.ndarray:
        return _find(self._dk, self._alive, False, keys)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """What the compiled get/put read: main, tombstones, the delta buffer and its length."""
        return self._mk, self._mv, self._alive, self._dkb, self._dvb, self._dn

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Values of `keys` (n,) int64; -1 where absent (or 1 for present keys of a key set)."""
        keys = np.asarray(keys, np.int64)
        if len(keys) <= _SMALL_PUT:
            return _get(*self._arrays(), keys, self._with_values)
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
        if len(lo) <= _SMALL_PUT:
            return _range(*self._arrays(), lo, hi, self._with_values)
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
        if len(keys) <= _SMALL_PUT:  # (a key set's values are never read: keys stand in)
            self._put_small(keys, keys if values is None else np.asarray(values, np.int64))
            return
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
            dv = np.insert(self._dv, at, nv) if self._with_values else self._dvb
            self._dk = np.insert(self._dk, at, nk)  # (sets the delta length: after _dv reads)
            self._dv = dv
            if self._dn > self._limit:
                self._merge()

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Key sets: insert `keys` (unique within the call); returns which were new (n,) bool."""
        keys = np.asarray(keys, np.int64)
        if len(keys) > _SMALL_PUT:
            new = ~self.contains(keys)
            self.put(keys[new])
            return new
        return self._put_small(keys, keys) < 0  # (values unused in a key set)

    def swap(self, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`put`, returning the values the keys had before (n,) int64 (-1 where new)."""
        keys = np.asarray(keys, np.int64)
        if len(keys) <= _SMALL_PUT:
            return self._put_small(keys, np.asarray(values, np.int64))
        old = self.get(keys)
        self.put(keys, values)
        return old

    def _put_small(self, keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """Compiled put of a few keys; returns their previous values (n,) int64, -1 where
        new (1 where present in a key set)."""
        if self._dn + len(keys) > len(self._dkb):
            cap = max(2 * len(self._dkb), self._dn + len(keys) + 16)
            self._dkb = _grown(self._dkb, self._dn, cap)
            if self._with_values:
                self._dvb = _grown(self._dvb, self._dn, cap)
        old = np.empty(len(keys), np.int64)
        self._dn = _put(*self._arrays(), keys, vals, self._with_values, old)
        if self._dn > self._limit:
            self._merge()
        return old

    def remove(self, keys: np.ndarray) -> int:
        """Delete keys that are present; returns how many were."""
        keys = np.asarray(keys, np.int64)
        if len(keys) <= _SMALL_PUT:  # tombstones and delta shifts in one compiled call
            n_main, n_delta = _remove(*self._arrays(), keys, self._with_values)
            self._dn -= n_delta
            self._n_dead += n_main
            if self._n_dead > len(self._mk) // 4 + _MIN_DELTA:
                self._merge()
            return int(n_main + n_delta)
        pm = self._find_main(keys)
        pm = pm[pm >= 0]
        self._alive[pm] = False
        self._n_dead += len(pm)
        pd = self._find_delta(keys)
        pd = pd[pd >= 0]
        if len(pd):
            dv = np.delete(self._dv, pd) if self._with_values else self._dvb
            self._dk = np.delete(self._dk, pd)
            self._dv = dv
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
        self._limit = max(_MIN_DELTA, 4 * int(np.sqrt(len(self._mk))))

    @classmethod
    def from_sorted(cls, keys: np.ndarray, values: np.ndarray | None = None) -> SortedMap:
        """Build from unique keys sorted ascending (e.g. a snapshot)."""
        m = cls(values=values is not None)
        m._mk = np.ascontiguousarray(keys, np.int64)
        m._mv = np.ascontiguousarray(values, np.int64) if values is not None else m._mv
        m._alive = np.ones(len(m._mk), bool)
        m._limit = max(_MIN_DELTA, 4 * int(np.sqrt(len(m._mk))))
        return m


def _grown(a: np.ndarray, n: int, cap: int) -> np.ndarray:
    b = np.empty(cap, a.dtype)
    b[:n] = a[:n]
    return b


@numba.njit(cache=True, nogil=True)
def _put(mk, mv, alive, dk, dv, dn, keys, vals, with_values, old):  # pragma: no cover
    """Overwrite keys present (live) in main or the delta; insert the others into the delta
    buffer (dk, dv)[:dn], which has room for all of them, keeping it sorted. Sets old[i] to
    the key's previous value (1 in a key set), -1 for inserted keys; returns the new delta
    length."""
    n = mk.shape[0]
    for i in range(keys.shape[0]):
        key = keys[i]
        p = np.searchsorted(mk, key)
        if p < n and mk[p] == key and alive[p]:
            old[i] = mv[p] if with_values else 1
            if with_values:
                mv[p] = vals[i]
            continue
        p = np.searchsorted(dk[:dn], key)
        if p < dn and dk[p] == key:
            old[i] = dv[p] if with_values else 1
            if with_values:
                dv[p] = vals[i]
            continue
        for j in range(dn, p, -1):
            dk[j] = dk[j - 1]
            if with_values:
                dv[j] = dv[j - 1]
        dk[p] = key
        if with_values:
            dv[p] = vals[i]
        dn += 1
        old[i] = -1
    return dn


@numba.njit(cache=True, nogil=True)
def _remove(mk, mv, alive, dk, dv, dn, keys, with_values):  # pragma: no cover - compiled
    """Tombstone keys live in main, cut keys out of the delta buffer (dk, dv)[:dn] (shifting
    it left); returns (removed from main, removed from the delta)."""
    n = mk.shape[0]
    n_main = 0
    n_delta = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        p = np.searchsorted(mk, key)
        if p < n and mk[p] == key and alive[p]:
            alive[p] = False
            n_main += 1
            continue
        m = dn - n_delta
        p = np.searchsorted(dk[:m], key)
        if p < m and dk[p] == key:
            for j in range(p, m - 1):
                dk[j] = dk[j + 1]
                if with_values:
                    dv[j] = dv[j + 1]
            n_delta += 1
    return n_main, n_delta


@numba.njit(cache=True, nogil=True)
def _range(mk, mv, alive, dk, dv, dn, lo, hi, with_values):  # pragma: no cover - compiled
    """`range` of a few intervals in one call: live keys k, lo[i] <= k < hi[i], of main and
    the delta, with their values (1 in a key set), sorted by key."""
    n = mk.shape[0]
    total = 0
    for i in range(lo.shape[0]):
        a, b = np.searchsorted(mk, lo[i]), np.searchsorted(mk, hi[i])
        for j in range(a, b):
            total += alive[j]
        total += max(np.searchsorted(dk[:dn], hi[i]) - np.searchsorted(dk[:dn], lo[i]), 0)
    keys = np.empty(total, np.int64)
    vals = np.ones(total, np.int64)
    k = 0
    for i in range(lo.shape[0]):
        a, b = np.searchsorted(mk, lo[i]), min(np.searchsorted(mk, hi[i]), n)
        for j in range(a, b):
            if alive[j]:
                keys[k] = mk[j]
                if with_values:
                    vals[k] = mv[j]
                k += 1
        a, b = np.searchsorted(dk[:dn], lo[i]), np.searchsorted(dk[:dn], hi[i])
        for j in range(a, b):
            keys[k] = dk[j]
            if with_values:
                vals[k] = dv[j]
            k += 1
    order = np.argsort(keys, kind="mergesort")
    return keys[order], vals[order]


@numba.njit(cache=True, nogil=True)
def _get(mk, mv, alive, dk, dv, dn, keys, with_values):  # pragma: no cover - compiled
    """`get` in one call: the value (1 for a key set) of each key, -1 where absent."""
    out = np.empty(keys.shape[0], np.int64)
    n = mk.shape[0]
    for i in range(keys.shape[0]):
        key = keys[i]
        out[i] = -1
        p = np.searchsorted(mk, key)
        if p < n and mk[p] == key and alive[p]:
            out[i] = mv[p] if with_values else 1
            continue
        p = np.searchsorted(dk[:dn], key)
        if p < dn and dk[p] == key:
            out[i] = dv[p] if with_values else 1
    return out


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
