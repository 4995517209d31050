"""Compiled loops of the proximity graph (numba, cached on disk, GIL released).

The graph is one int32 matrix `nbr` (capacity, R): row s lists up to R neighbour slots of
slot s, -1 padded at the end. `linked` (capacity,) bool says which slots are nodes of the graph
(a deleted or not yet linked slot is not traversed). Vectors are read from the vector store's
matrix passed in on every call, so the graph never copies them. Distances as in `kernels`:
squared L2 (`ip=False`) or negative inner product (`ip=True`).

Visited sets are tag arrays (one uint32 row per worker thread, a tag bumped per search and the
row cleared only when the tag wraps), so a search costs what it visits, not the collection size.
"""

from __future__ import annotations

import numba
import numpy as np

from curator.index.kernels import _dist, _dists, _front_pop, _front_push, _top_push, _top_sorted

__all__ = ["candidates", "commit_links", "remap_rows", "repair", "search_batch"]

#: Below this many queries a batch runs on the calling thread.
PARALLEL_MIN_QUERIES = 8

_jit = numba.njit(cache=True, nogil=True, fastmath=True)


@_jit
def _next_tag(visited, tags, row):  # pragma: no cover - compiled
    t = tags[row] + np.uint32(1)
    if t == 0:
        visited[row, :] = 0
        t = np.uint32(1)
    tags[row] = t
    return t


@_jit
def _grow(a, n):  # pragma: no cover - compiled
    b = np.empty(2 * a.shape[0], a.dtype)
    b[:n] = a[:n]
    return b


@_jit
def _admit(cd, cs, nc, rd, rs, nr, ef, d, v):  # pragma: no cover - compiled
    """Offer node `v` at distance `d` to the frontier (cd, cs: grown on demand) and the
    top-`ef` results (rd, rs); returns the four that may change."""
    if nr < ef or d < rd[0]:
        if nc == cd.shape[0]:
            cd = _grow(cd, nc)
            cs = _grow(cs, nc)
        nc = _front_push(cd, cs, nc, d, v)
        nr = _top_push(rd, rs, nr, d, v)
    return cd, cs, nc, nr


# fmt: off
@_jit
def _beam(q, ip, vectors, vnorm, nbr, linked, allow, filtered, two_hop, seeds, ef, budget,
          vis, tag, rd, rs):  # pragma: no cover - compiled
    """Best-first search from `seeds`; keeps the `ef` nearest allowed nodes in the max-heap
    (rd, rs). Filtered search traverses every node but admits only allowed ones to the results
    (hnswlib's rule); with `two_hop`, candidates are allowed nodes only and a filtered-out
    neighbour is looked through once (ACORN-1 style). Returns (results held, distances
    computed); the distance count is negated if the search gave up past `budget` of them."""
    qn = np.float32(0.0)
    for j in range(q.shape[0]):
        qn += q[j] * q[j]
    cap = 4 * ef + 64
    cd = np.empty(cap, np.float32)
    cs = np.empty(cap, np.int32)
    nc = 0
    nr = 0
    touched = 0
    R = nbr.shape[1]
    # A popped node's new neighbours (two hops: R x R), or the seeds: distances computed
    # together (rows in flight).
    nb = np.empty(max(R * (R + 1), seeds.shape[0]), np.int32)
    db = np.empty(nb.shape[0], np.float32)
    n = 0
    for e in range(seeds.shape[0]):
        s = seeds[e]
        if s < 0 or vis[s] == tag or not linked[s]:
            continue
        vis[s] = tag
        if two_hop and not allow[s]:
            continue
        nb[n] = s
        n += 1
    _dists(q, qn, ip, nb, 0, n, vectors, vnorm, db)
    touched += n
    for e in range(n):
        s = nb[e]
        if nc == cd.shape[0]:
            cd = _grow(cd, nc)
            cs = _grow(cs, nc)
        nc = _front_push(cd, cs, nc, db[e], s)
        if not filtered or allow[s]:
            nr = _top_push(rd, rs, nr, db[e], s)
    while nc > 0:
        d0 = cd[0]
        c = cs[0]
        nc = _front_pop(cd, cs, nc)
        if nr >= ef and d0 > rd[0]:
            break
        if touched > budget:
            return nr, -touched
        n = 0
        for j in range(R):
            v = nbr[c, j]
            if v < 0:
                break
            if vis[v] == tag:
                continue
            vis[v] = tag
            if not linked[v]:
                continue
            if two_hop and not allow[v]:
                # Look through a filtered-out neighbour at its allowed neighbours.
                for j2 in range(R):
                    w = nbr[v, j2]
                    if w < 0:
                        break
                    if vis[w] == tag or not linked[w] or not allow[w]:
                        continue
                    vis[w] = tag
                    nb[n] = w
                    n += 1
                continue
            nb[n] = v
            n += 1
        _dists(q, qn, ip, nb, 0, n, vectors, vnorm, db)  # computed together: rows in flight
        touched += n
        for j in range(n):
            v = nb[j]
            dv = db[j]
            if nr < ef or dv < rd[0]:
                if nc == cd.shape[0]:
                    cd = _grow(cd, nc)
                    cs = _grow(cs, nc)
                nc = _front_push(cd, cs, nc, dv, v)
                if not filtered or allow[v]:
                    nr = _top_push(rd, rs, nr, dv, v)
    return nr, touched


@_jit
def _search_one(queries, r, k, ef, ip, vectors, vnorm, nbr, linked, allow, filtered, two_hop,
                seeds, budget, visited, tags, row, out_s, out_d, out_n):  # pragma: no cover
    tag = _next_tag(visited, tags, row)
    rd = np.empty(ef, np.float32)
    rs = np.empty(ef, np.int32)
    nr, touched = _beam(queries[r], ip, vectors, vnorm, nbr, linked, allow, filtered, two_hop,
                        seeds, ef, budget, visited[row], tag, rd, rs)
    _top_sorted(rd, rs, nr, k, out_s[r], out_d[r])
    out_n[r] = touched


# Serial and parallel drivers are written out twice (see kernels.py: numba's cache is keyed
# by function name and place).
@numba.njit(cache=True, nogil=True, fastmath=True)
def _search_serial(queries, k, ef, ip, vectors, vnorm, nbr, linked, allow, filtered, two_hop,
                   seeds, budget, visited, tags):  # pragma: no cover - compiled
    nq = queries.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    for r in range(nq):
        _search_one(queries, r, k, max(ef, k), ip, vectors, vnorm, nbr, linked, allow, filtered,
                    two_hop, seeds, budget, visited, tags, 0, out_s, out_d, out_n)
    return out_s, out_d, out_n


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _search_parallel(queries, k, ef, ip, vectors, vnorm, nbr, linked, allow, filtered, two_hop,
                     seeds, budget, visited, tags):  # pragma: no cover - compiled
    nq = queries.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    for r in numba.prange(nq):
        _search_one(queries, r, k, max(ef, k), ip, vectors, vnorm, nbr, linked, allow, filtered,
                    two_hop, seeds, budget, visited, tags, numba.get_thread_id(), out_s, out_d,
                    out_n)
    return out_s, out_d, out_n


@_jit
def _select(base, cs, cd, n, R, ip, vectors, vnorm, out):  # pragma: no cover - compiled
    """HNSW neighbour heuristic: from candidates (cs, cd) sorted by distance to `base`, keep
    a candidate unless an already kept one is closer to it than `base` is. Writes up to R slots
    to `out` (-1 padded); returns how many."""
    m = 0
    for i in range(n):
        c = cs[i]
        if c < 0 or c == base:
            continue
        ok = True
        for j in range(m):
            p = out[j]
            if _dist(vectors[c], vnorm[c], vectors[p], vnorm[p], ip) < cd[i]:
                ok = False
                break
        if ok:
            out[m] = c
            m += 1
            if m == R:
                break
    for j in range(m, R):
        out[j] = -1
    return m


@_jit
def _add_link(v, x, ip, vectors, vnorm, nbr, scratch_s, scratch_d):  # pragma: no cover
    """Add the edge v -> x: into a free entry, else re-select v's neighbours among them and x."""
    R = nbr.shape[1]
    for j in range(R):
        w = nbr[v, j]
        if w == x:
            return
        if w < 0:
            nbr[v, j] = x
            return
    for j in range(R):
        w = nbr[v, j]
        scratch_s[j] = w
        scratch_d[j] = _dist(vectors[v], vnorm[v], vectors[w], vnorm[w], ip)
    scratch_s[R] = x
    scratch_d[R] = _dist(vectors[v], vnorm[v], vectors[x], vnorm[x], ip)
    order = np.argsort(scratch_d[: R + 1])
    ss = scratch_s[: R + 1][order]
    sd = scratch_d[: R + 1][order]
    _select(v, ss, sd, R + 1, R, ip, vectors, vnorm, nbr[v])


@numba.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def candidates(new, efc, ip, vectors, vnorm, nbr, linked, seeds, visited,
                tags):  # pragma: no cover - compiled
    """For each slot of `new` (b,) int32: its `efc` nearest linked slots, searched in parallel
    (a parallel kernel is only ever called from Python: numba's cache mishandles parallel
    kernels called from other compiled functions). Returns slots and distances (b, efc)."""
    b = new.shape[0]
    out_s = np.full((b, efc), -1, np.int32)
    out_d = np.full((b, efc), np.inf, np.float32)
    dummy = np.zeros(1, np.bool_)
    for i in numba.prange(b):
        row = numba.get_thread_id()
        tag = _next_tag(visited, tags, row)
        rd = np.empty(efc, np.float32)
        rs = np.empty(efc, np.int32)
        x = new[i]
        q = vectors[x]
        nr, _ = _beam(q, ip, vectors, vnorm, nbr, linked, dummy, False, False, seeds, efc,
                      np.iinfo(np.int64).max, visited[row], tag, rd, rs)
        _top_sorted(rd, rs, nr, efc, out_s[i], out_d[i])
    return out_s, out_d


@numba.njit(cache=True, nogil=True, fastmath=True)
def commit_links(part, cs, cd, ip, vectors, vnorm, nbr, linked):  # pragma: no cover - compiled
    """Link slots `part` (b,) given their candidates (b, efc) from `candidates`: heuristic
    neighbours, then the reverse edges (re-selecting a full neighbour list)."""
    R = nbr.shape[1]
    scratch_s = np.empty(R + 1, np.int32)
    scratch_d = np.empty(R + 1, np.float32)
    for i in range(part.shape[0]):
        x = part[i]
        _select(x, cs[i], cd[i], cs.shape[1], R, ip, vectors, vnorm, nbr[x])
        linked[x] = True
        for j in range(R):
            v = nbr[x, j]
            if v < 0:
                break
            _add_link(v, x, ip, vectors, vnorm, nbr, scratch_s, scratch_d)


@numba.njit(cache=True, nogil=True, fastmath=True)
def repair(ip, vectors, vnorm, nbr, linked, high):  # pragma: no cover - compiled
    """Drop edges to unlinked (deleted) slots: a node that had one re-selects its neighbours
    among its live neighbours and the live neighbours of the deleted ones (whose rows are still
    intact). Afterwards the rows of unlinked slots are cleared. Returns nodes repaired."""
    R = nbr.shape[1]
    fixed = np.zeros(high, np.int32)
    for u in range(high):
        if not linked[u]:
            continue
        bad = False
        for j in range(R):
            v = nbr[u, j]
            if v < 0:
                break
            if not linked[v]:
                bad = True
                break
        if not bad:
            continue
        cs = np.empty(R + R * R, np.int32)
        n = 0
        for j in range(R):
            v = nbr[u, j]
            if v < 0:
                break
            if linked[v]:
                cs[n] = v
                n += 1
            else:
                for j2 in range(R):
                    w = nbr[v, j2]
                    if w < 0:
                        break
                    if linked[w] and w != u:
                        cs[n] = w
                        n += 1
        cs = np.unique(cs[:n])
        n = cs.shape[0]
        cd = np.empty(n, np.float32)
        for i in range(n):
            cd[i] = _dist(vectors[u], vnorm[u], vectors[cs[i]], vnorm[cs[i]], ip)
        order = np.argsort(cd)
        row = np.empty(R, np.int32)
        _select(u, cs[order], cd[order], n, R, ip, vectors, vnorm, row)
        fixed[u] = 1
        for j in range(R):
            nbr[u, j] = row[j]
    for u in range(high):
        if not linked[u]:
            nbr[u, :] = -1
    return fixed.sum()


@numba.njit(cache=True, nogil=True)
def remap_rows(nbr, order, new_slot):  # pragma: no cover - compiled
    """The graph after a re-layout of the store: new row i is old row `order[i]`, every entry
    renumbered through `new_slot` (old slot -> new, -1 if gone) and gaps closed."""
    n = order.shape[0]
    R = nbr.shape[1]
    out = np.full((n, R), -1, np.int32)
    for i in range(n):
        m = 0
        for j in range(R):
            v = nbr[order[i], j]
            if v < 0:
                break
            w = new_slot[v]
            if w >= 0:
                out[i, m] = w
                m += 1
    return out
# fmt: on


def search_batch(queries: np.ndarray, *args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graph search of each row of `queries` (nq, d); arguments as `_search_serial`: k, ef, ip,
    vectors, vnorm, nbr, linked, allow (capacity,) bool, filtered, two_hop, seeds, budget,
    visited, tags. Returns slots (nq, k) int32 (-1 padded), distances (nq, k) float32 (inf
    padded) and distances computed per query (nq,) int64, negative where the search gave up
    past `budget` distances (its row is then incomplete)."""
    fn = _search_parallel if len(queries) >= PARALLEL_MIN_QUERIES else _search_serial
    return fn(queries, *args)
