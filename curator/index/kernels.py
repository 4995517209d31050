"""Compiled inner loops of search (numba, cached on disk).

A query against one tenant is a walk over its sub-tree (a `TenantView`) with per-node and
per-candidate work in the tens of nanoseconds; written as numpy calls, the interpreter would
cost more than the arithmetic (see bench/RESULTS.md). All kernels release the GIL.

Distances: with `ip=False`, squared L2 computed as |q|^2 + |v|^2 - 2 q.v; with `ip=True`,
the negative inner product. Results are slots (rows of the vector store), -1 padded.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "exact_batch",
    "finish",
    "group_owners",
    "merge_rows",
    "prepare_rows",
    "tree_batch",
]

_jit = numba.njit(cache=True, nogil=True, fastmath=True)


@_jit
def _dist(q, qn, v, vn, ip):  # pragma: no cover - compiled
    dot = np.float32(0.0)
    for j in range(q.shape[0]):
        dot += q[j] * v[j]
    if ip:
        return -dot
    return qn + vn - np.float32(2.0) * dot


# -- a bounded max-heap of (distance, slot): the running top list ----------------------------
@_jit
def _top_push(hd, hs, n, d, s):  # pragma: no cover - compiled
    """Push into a max-heap of capacity len(hd) holding n items; returns the new n."""
    cap = hd.shape[0]
    if n < cap:
        i = n
        n += 1
    elif d < hd[0]:
        # Replace the root and sift down.
        i = 0
        while True:
            left = 2 * i + 1
            if left >= n:
                break
            c = left
            if left + 1 < n and hd[left + 1] > hd[left]:
                c = left + 1
            if hd[c] <= d:
                break
            hd[i] = hd[c]
            hs[i] = hs[c]
            i = c
        hd[i] = d
        hs[i] = s
        return n
    else:
        return n
    while i > 0:  # sift up a new item
        p = (i - 1) // 2
        if hd[p] >= d:
            break
        hd[i] = hd[p]
        hs[i] = hs[p]
        i = p
    hd[i] = d
    hs[i] = s
    return n


@_jit
def _top_sorted(hd, hs, n, k, out_s, out_d):  # pragma: no cover - compiled
    order = np.argsort(hd[:n])
    m = min(k, n)
    for i in range(m):
        out_s[i] = hs[order[i]]
        out_d[i] = hd[order[i]]
    for i in range(m, k):
        out_s[i] = -1
        out_d[i] = np.inf


# -- a min-heap of (score, sub-tree node): the best-first frontier ---------------------------
@_jit
def _front_push(fs, fi, n, s, i):  # pragma: no cover - compiled
    j = n
    while j > 0:
        p = (j - 1) // 2
        if fs[p] <= s:
            break
        fs[j] = fs[p]
        fi[j] = fi[p]
        j = p
    fs[j] = s
    fi[j] = i
    return n + 1


@_jit
def _front_pop(fs, fi, n):  # pragma: no cover - compiled
    """Remove the root; returns the new n (the caller read fs[0], fi[0] first)."""
    n -= 1
    s = fs[n]
    i = fi[n]
    j = 0
    while True:
        left = 2 * j + 1
        if left >= n:
            break
        c = left
        if left + 1 < n and fs[left + 1] < fs[left]:
            c = left + 1
        if fs[c] >= s:
            break
        fs[j] = fs[c]
        fi[j] = fi[c]
        j = c
    if n > 0:
        fs[j] = s
        fi[j] = i
    return n


@_jit
def _node_score(q, qn, c, cn, rad, vb):  # pragma: no cover - compiled
    dot = np.float32(0.0)
    for j in range(q.shape[0]):
        dot += q[j] * c[j]
    return qn + cn - np.float32(2.0) * dot - vb * rad


# fmt: off
@_jit
def _tree_one(q, k, ef, patience, beam_size, vb, ip, node, child_ptr, child, sl_ptr, slots,
              centroids, cnorm, crad, vectors, vnorm, out_s, out_d):  # pragma: no cover
    """Curator v2 search of one query over one tenant sub-tree: a beam descent seeds a
    best-first frontier; shortlists are scanned into a top-`ef` list; the search stops once
    the shortlists scanned since the list last improved (it being full) hold `patience`
    vectors or more. Returns the vectors scanned.

    Curator v2 stops at the first non-improving shortlist (patience 1). That is evidence
    only when shortlists are large: a tenant spread over the tree has many shortlists of a
    few vectors, and one of them failing to improve the list says little (Debian tenants of
    500-4,000 vectors: recall@10 0.92-0.94 at ef 128, bench/RESULTS.md §11)."""
    m = node.shape[0]
    qn = np.float32(0.0)
    for j in range(q.shape[0]):
        qn += q[j] * q[j]
    hd = np.empty(ef, np.float32)
    hs = np.empty(ef, np.int32)
    nh = 0
    scanned = 0
    if m == 0:
        _top_sorted(hd, hs, 0, k, out_s, out_d)
        return 0
    fs = np.empty(m, np.float32)
    fi = np.empty(m, np.int32)
    nf = 0
    score = np.empty(m, np.float32)
    beam = np.empty(m, np.int32)
    nb = 1
    beam[0] = 0
    score[0] = 0.0
    if beam_size > 0:
        cand = np.empty(m, np.int32)
        while True:
            nc = 0
            grew = False
            for b in range(nb):
                i = beam[b]
                if sl_ptr[i + 1] > sl_ptr[i]:
                    cand[nc] = i
                    nc += 1
                else:
                    grew = True
                    for e in range(child_ptr[i], child_ptr[i + 1]):
                        c = child[e]
                        g = node[c]
                        score[c] = _node_score(q, qn, centroids[g], cnorm[g], crad[g], vb)
                        cand[nc] = c
                        nc += 1
            if not grew:
                break
            order = np.argsort(score[cand[:nc]])
            nb = min(beam_size, nc)
            for r in range(nc):
                c = cand[order[r]]
                if r < nb:
                    beam[r] = c
                else:
                    nf = _front_push(fs, fi, nf, score[c], c)
    for b in range(nb):
        nf = _front_push(fs, fi, nf, score[beam[b]], beam[b])
    stale = 0  # vectors scanned since the list last improved
    buf = np.empty(SCAN_CHUNK, np.float32)
    while nf > 0:
        i = fi[0]
        nf = _front_pop(fs, fi, nf)
        lo = sl_ptr[i]
        hi = sl_ptr[i + 1]
        if hi > lo:
            scanned += hi - lo
            nh, improved = _scan(q, qn, ip, slots, lo, hi, vectors, vnorm, hd, hs, nh, buf)
            if improved:
                stale = 0
            else:
                stale += hi - lo
                if nh == ef and stale >= patience:
                    break
        else:
            for e in range(child_ptr[i], child_ptr[i + 1]):
                c = child[e]
                g = node[c]
                nf = _front_push(fs, fi, nf,
                                 _node_score(q, qn, centroids[g], cnorm[g], crad[g], vb), c)
    _top_sorted(hd, hs, nh, k, out_s, out_d)
    return scanned


@_jit
def _dists(q, qn, ip, gs, lo, hi, vectors, vnorm, out):  # pragma: no cover - compiled
    """Distances from q to the vectors of slots gs[lo:hi] into out[:hi - lo]. Rows are taken
    four at a time, one pass over q for the four dot products (about twice the speed of one
    row at a time at d 384: fewer loads of q, four independent sums, four rows in flight)."""
    d = q.shape[0]
    two = np.float32(2.0)
    e = lo
    while e + 4 <= hi:
        sa, sb, sc, sd = gs[e], gs[e + 1], gs[e + 2], gs[e + 3]
        a, b, c, w = vectors[sa], vectors[sb], vectors[sc], vectors[sd]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for j in range(d):
            qj = q[j]
            s0 += qj * a[j]
            s1 += qj * b[j]
            s2 += qj * c[j]
            s3 += qj * w[j]
        o = e - lo
        if ip:
            out[o], out[o + 1], out[o + 2], out[o + 3] = -s0, -s1, -s2, -s3
        else:
            out[o] = qn + vnorm[sa] - two * s0
            out[o + 1] = qn + vnorm[sb] - two * s1
            out[o + 2] = qn + vnorm[sc] - two * s2
            out[o + 3] = qn + vnorm[sd] - two * s3
        e += 4
    for t in range(e, hi):
        s = gs[t]
        out[t - lo] = _dist(q, qn, vectors[s], vnorm[s], ip)


#: Rows one `_scan` pass computes before offering them to the top list (its buffer's size).
SCAN_CHUNK = 64


@_jit
def _scan(q, qn, ip, slots, lo, hi, vectors, vnorm, hd, hs, nh, buf):  # pragma: no cover
    """Offer the vectors of slots[lo:hi] to the top list (hd, hs) holding nh (capacity
    len(hd)); `buf` (SCAN_CHUNK,) float32 scratch. Returns (nh, whether the list changed)."""
    cap = hd.shape[0]
    changed = False
    for a in range(lo, hi, SCAN_CHUNK):
        b = min(hi, a + SCAN_CHUNK)
        _dists(q, qn, ip, slots, a, b, vectors, vnorm, buf)
        for t in range(b - a):
            r = buf[t]
            if nh < cap or r < hd[0]:
                nh = _top_push(hd, hs, nh, r, slots[a + t])
                changed = True
    return nh, changed


@_jit
def _exact_one(q, k, ip, slots, vectors, vnorm, out_s, out_d):  # pragma: no cover
    qn = np.float32(0.0)
    for j in range(q.shape[0]):
        qn += q[j] * q[j]
    hd = np.empty(k, np.float32)
    hs = np.empty(k, np.int32)
    buf = np.empty(SCAN_CHUNK, np.float32)
    nh, _ = _scan(q, qn, ip, slots, 0, slots.shape[0], vectors, vnorm, hd, hs, 0, buf)
    _top_sorted(hd, hs, nh, k, out_s, out_d)
    return slots.shape[0]


# The serial and parallel drivers differ only in range/prange; they are written out twice
# because numba's on-disk cache keys functions by name and place, which a factory would share.
@numba.njit(cache=True, nogil=True, fastmath=True)
def _tree_serial(queries, k, ef, patience, beam_size, vb, ip, node, child_ptr, child, sl_ptr,
                 slots, centroids, cnorm, crad, vectors, vnorm):  # pragma: no cover - compiled
    nq = queries.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    for r in range(nq):
        out_n[r] = _tree_one(queries[r], k, max(ef, k), patience, beam_size, vb, ip, node,
                             child_ptr, child, sl_ptr, slots, centroids, cnorm, crad, vectors,
                             vnorm, out_s[r], out_d[r])
    return out_s, out_d, out_n


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _tree_parallel(queries, k, ef, patience, beam_size, vb, ip, node, child_ptr, child, sl_ptr,
                   slots, centroids, cnorm, crad, vectors, vnorm):  # pragma: no cover - compiled
    nq = queries.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    for r in numba.prange(nq):
        out_n[r] = _tree_one(queries[r], k, max(ef, k), patience, beam_size, vb, ip, node,
                             child_ptr, child, sl_ptr, slots, centroids, cnorm, crad, vectors,
                             vnorm, out_s[r], out_d[r])
    return out_s, out_d, out_n


@numba.njit(cache=True, nogil=True, fastmath=True)
def _exact_serial(queries, k, ip, slots, vectors, vnorm):  # pragma: no cover - compiled
    nq = queries.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    for r in range(nq):
        out_n[r] = _exact_one(queries[r], k, ip, slots, vectors, vnorm, out_s[r], out_d[r])
    return out_s, out_d, out_n


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _exact_parallel(queries, k, ip, slots, vectors, vnorm):  # pragma: no cover - compiled
    nq = queries.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    for r in numba.prange(nq):
        out_n[r] = _exact_one(queries[r], k, ip, slots, vectors, vnorm, out_s[r], out_d[r])
    return out_s, out_d, out_n
# fmt: on

#: Below this many queries a batch runs on the calling thread (thread-pool start-up costs
#: more than it saves).
PARALLEL_MIN_QUERIES = 8


def tree_batch(queries: np.ndarray, *args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tree search of each row of `queries` (nq, d) over one tenant's sub-tree; arguments as
    `_tree_one`. Returns slots (nq, k) int32 (-1 padded), distances (nq, k) float32 (inf
    padded) and the number of vectors scanned per query (nq,) int64."""
    fn = _tree_parallel if len(queries) >= PARALLEL_MIN_QUERIES else _tree_serial
    return fn(queries, *args)


def exact_batch(queries: np.ndarray, *args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k of each query among `slots`; same outputs as `tree_batch`."""
    fn = _exact_parallel if len(queries) >= PARALLEL_MIN_QUERIES else _exact_serial
    return fn(queries, *args)


@numba.njit(cache=True, nogil=True)
def finish(slots, dists, ext_id, shift, clamp):  # pragma: no cover - compiled
    """Slots -> client ids (as int64 bits, -1 padded); distances + shift, clamped at 0 if
    `clamp`, inf padded."""
    nq, k = slots.shape
    ids = np.empty((nq, k), np.int64)
    out = np.empty((nq, k), np.float32)
    for r in range(nq):
        for c in range(k):
            s = slots[r, c]
            if s < 0:
                ids[r, c] = -1
                out[r, c] = np.inf
            else:
                ids[r, c] = np.int64(ext_id[s])
                d = dists[r, c] + shift
                out[r, c] = max(d, np.float32(0.0)) if clamp else d
    return ids, out


@numba.njit(cache=True, nogil=True)
def prepare_rows(x, normalize, max_sq):  # pragma: no cover - compiled
    """Copy of `x` (n, d) float32, rows scaled to unit length if `normalize`. Returns the
    copy and the first row that holds NaN/inf, whose squared norm (summed in float64, so it
    cannot overflow) exceeds `max_sq`, or (when normalising) that is zero; else -1."""
    n, d = x.shape
    out = np.empty((n, d), np.float32)
    for i in range(n):
        sq = np.float64(0.0)
        for j in range(d):
            v = np.float64(x[i, j])
            if not np.isfinite(v):
                return out, i
            sq += v * v
        if sq > max_sq:
            return out, i
        if normalize:
            if sq == 0.0:
                return out, i
            inv = 1.0 / np.sqrt(sq)
            for j in range(d):
                out[i, j] = np.float32(x[i, j] * inv)
        else:
            for j in range(d):
                out[i, j] = x[i, j]
    return out, -1


@numba.njit(cache=True, nogil=True)
def merge_rows(slots, dists, k):  # pragma: no cover - compiled
    """Per row of (nq, m) candidates: the k nearest distinct slots (ascending distance)."""
    nq, m = slots.shape
    out_s = np.full((nq, k), -1, np.int32)
    out_d = np.full((nq, k), np.inf, np.float32)
    for r in range(nq):
        order = np.argsort(dists[r], kind="mergesort")
        n = 0
        for e in range(m):
            s = slots[r, order[e]]
            if s < 0:
                break
            dup = False
            for t in range(n):
                if out_s[r, t] == s:
                    dup = True
                    break
            if dup:
                continue
            out_s[r, n] = s
            out_d[r, n] = dists[r, order[e]]
            n += 1
            if n == k:
                break
    return out_s, out_d


@numba.njit(cache=True, nogil=True)
def group_owners(slots, owner):  # pragma: no cover - compiled
    """Owners of hits given as slots (nq, k), -1 padded: the distinct owners (u,) int32,
    ascending, and for each hit the index into them (nq, k) int64 (-1 for padding).
    Compiled: numpy's unique/where/fancy indexing cost ~15 µs on ten hits."""
    nq, k = slots.shape
    vals = np.empty(nq * k, np.int32)
    n = 0
    for r in range(nq):
        for c in range(k):
            if slots[r, c] >= 0:
                vals[n] = owner[slots[r, c]]
                n += 1
    uniq = np.unique(vals[:n])
    index = np.full((nq, k), -1, np.int64)
    for r in range(nq):
        for c in range(k):
            if slots[r, c] >= 0:
                index[r, c] = np.searchsorted(uniq, owner[slots[r, c]])
    return uniq, index
