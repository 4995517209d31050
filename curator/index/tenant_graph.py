"""Per-tenant graph links over the shared vector store, for tenants too large to scan.

A tree search of a tenant of 1-4k vectors scans 35-40 % of it to reach recall@10 0.95 (its
shortlists are coarse: Debian tenants, bench/RESULTS.md §11); a proximity graph over just the
tenant's vectors computes ~150 distances for the same recall, as per-tenant HNSW does. Here
the links are held per tenant as an int32 matrix (m, R) of *local* ids (positions in the
tenant's sorted slot list, `TenantView.slots`); the vectors stay in the `VectorStore`, read
through the slot list (64 B per vector of such a tenant at R = 16).

The links are a search-side cache of one tenant view (its "base"): built in the background
once the tenant (of at least `MIN_SIZE` vectors) is searched; until then searches take the
tree. Writes to the tenant after the base are recorded in its `Journal` (the tenant tree
notes every slot it gains or loses), and a search overlays them: slots lost since the base
are walked through but never returned (so the links never return a vector the tenant may no
longer read), slots gained are scanned exactly beside the walk (so none is missed). Past
`JOURNAL_FRACTION` of the tenant changed, the journal is dropped and the tenant relinked.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from curator.index.cpu_budget import background_slot
from curator.index.graph_kernels import _admit, _grow
from curator.index.kernels import _dist, _dists, _front_pop, _front_push, _top_push, _top_sorted

if TYPE_CHECKING:
    from curator.index.tenant_tree import TenantTree, TenantView
    from curator.index.vector_store import VectorStore

__all__ = [
    "DEGREE",
    "EF_CONSTRUCTION",
    "MIN_SIZE",
    "Journal",
    "Overlay",
    "TenantGraph",
    "TenantGraphs",
]

log = logging.getLogger(__name__)

#: Tenants with at least this many vectors get links (smaller ones: exact scan or tree).
MIN_SIZE = 1024
#: Links per vector, and the candidate list width while linking (hnswlib's M and
#: ef_construction at the values bench/baselines.py gives per-tenant hnswlib).
DEGREE = 16
EF_CONSTRUCTION = 100
#: Entry points, spread over the sorted slot list (slots are laid out by tree leaf, so the
#: seeds fall in different clusters; one graph level has no upper layers to route from).
SEEDS = 16
#: After a build taking b seconds, the same tenant is not relinked for REBUILD_GAP x b
#: (at most ~10 % of a core per tenant under constant writes; the tree serves meanwhile).
REBUILD_GAP = 9.0
#: Slots a tenant's writes may change before its links are rebuilt: max(JOURNAL_MIN,
#: size / JOURNAL_FRACTION). Until then added slots are scanned exactly beside the links.
JOURNAL_MIN = 256
JOURNAL_FRACTION = 8

_jit = numba.njit(cache=True, nogil=True, fastmath=True)


# fmt: off
@_jit
def _walk(q, qn, ip, slots, vectors, vnorm, nbr, deg, pos, limit, seeds, ef, vis, tag,
          rd, rs, dead):  # pragma: no cover - compiled
    """Best-first walk over local ids with pos < limit; the `ef` nearest not `dead` (m,)
    bool in the max-heap (rd, rs) (dead nodes are walked through, never kept). Returns
    (results held, distances computed)."""
    nc = nr = touched = 0
    cd = np.empty(4 * ef + 64, np.float32)  # the frontier: grows on demand
    cs = np.empty(cd.shape[0], np.int32)
    # A popped node's unvisited neighbours, or the seeds: local ids, slots and distances
    # (computed together: rows in flight).
    nb = np.empty(max(nbr.shape[1], seeds.shape[0]), np.int32)
    gb = np.empty(nb.shape[0], np.int32)
    db = np.empty(nb.shape[0], np.float32)
    n = 0
    for e in range(seeds.shape[0]):
        s = seeds[e]
        if pos[s] >= limit or vis[s] == tag:
            continue
        vis[s] = tag
        nb[n] = s
        gb[n] = slots[s]
        n += 1
    _dists(q, qn, ip, gb, 0, n, vectors, vnorm, db)
    touched += n
    for e in range(n):
        s = nb[e]
        nc = _front_push(cd, cs, nc, db[e], s)
        if not dead[s]:
            nr = _top_push(rd, rs, nr, db[e], s)
    while nc > 0 and (nr < ef or cd[0] <= rd[0]):  # until the frontier is past the ef-th
        c = cs[0]
        nc = _front_pop(cd, cs, nc)
        n = 0
        for j in range(deg[c]):
            v = nbr[c, j]
            if vis[v] != tag:
                vis[v] = tag
                nb[n] = v
                gb[n] = slots[v]
                n += 1
        _dists(q, qn, ip, gb, 0, n, vectors, vnorm, db)  # computed together: rows in flight
        touched += n
        for j in range(n):
            v = nb[j]
            if dead[v]:  # a way through, not a result
                if nr < ef or db[j] < rd[0]:
                    if nc == cd.shape[0]:
                        cd, cs = _grow(cd, nc), _grow(cs, nc)
                    nc = _front_push(cd, cs, nc, db[j], v)
            else:
                cd, cs, nc, nr = _admit(cd, cs, nc, rd, rs, nr, ef, db[j], v)
    return nr, touched


@_jit
def _select(base, cand, cdist, n, R, ip, slots, vectors, vnorm, out):  # pragma: no cover
    """HNSW's neighbour heuristic: nearest first, skipping a candidate closer to an already
    kept neighbour than to `base`. Writes up to R local ids to `out`; returns how many."""
    order = np.argsort(cdist[:n])
    kept = 0
    for o in range(n):
        c = cand[order[o]]
        if c == base:
            continue
        dc = cdist[order[o]]
        gc = slots[c]
        ok = True
        for r in range(kept):
            gr = slots[out[r]]
            if _dist(vectors[gc], vnorm[gc], vectors[gr], vnorm[gr], ip) < dc:
                ok = False
                break
        if ok:
            out[kept] = c
            kept += 1
            if kept == R:
                break
    return kept


@_jit
def build(slots, vectors, vnorm, ip, R, efc, nseeds):  # pragma: no cover - compiled
    """Links of the tenant whose vectors are `slots` (m,) int32: (nbr (m, R) int32 local
    ids, -1 padded; deg (m,) int32; seeds (s,) int32 local ids)."""
    m = slots.shape[0]
    nbr = np.full((m, R), -1, np.int32)
    deg = np.zeros(m, np.int32)
    vis = np.zeros(m, np.int32)
    dead = np.zeros(m, np.bool_)
    seeds = np.arange(0, m, max(1, m // nseeds)).astype(np.int32)[:nseeds]
    order = np.empty(m, np.int32)  # seeds first: the walk starts from linked nodes
    first = np.zeros(m, np.bool_)
    o = 0
    for s in seeds:
        first[s] = True
        order[o] = s
        o += 1
    for i in range(m):
        if not first[i]:
            order[o] = i
            o += 1
    pos = np.empty(m, np.int32)
    for i in range(m):
        pos[order[i]] = i
    rd = np.empty(efc, np.float32)
    rs = np.empty(efc, np.int32)
    tmp = np.empty(R, np.int32)
    cs = np.empty(R + 1, np.int32)
    cdd = np.empty(R + 1, np.float32)
    for t in range(1, m):
        i = order[t]
        g = slots[i]
        nr, _ = _walk(vectors[g], vnorm[g], ip, slots, vectors, vnorm, nbr, deg, pos, t,
                      seeds, efc, vis, t, rd, rs, dead)
        k = _select(i, rs, rd, nr, R, ip, slots, vectors, vnorm, tmp)
        for j in range(k):
            nbr[i, j] = tmp[j]
        deg[i] = k
        for j in range(k):  # reverse links, re-selected when the row is full
            v = tmp[j]
            if deg[v] < R:
                nbr[v, deg[v]] = i
                deg[v] += 1
                continue
            gv = slots[v]
            for e in range(R):
                cs[e] = nbr[v, e]
                ge = slots[cs[e]]
                cdd[e] = _dist(vectors[gv], vnorm[gv], vectors[ge], vnorm[ge], ip)
            cs[R] = i
            cdd[R] = _dist(vectors[gv], vnorm[gv], vectors[g], vnorm[g], ip)
            kk = _select(v, cs, cdd, R + 1, R, ip, slots, vectors, vnorm, nbr[v])
            deg[v] = kk
            for e in range(kk, R):
                nbr[v, e] = -1
    return nbr, deg, seeds


@_jit
def search_batch(queries, k, ef, ip, slots, vectors, vnorm, nbr, deg, seeds,
                 dead):  # pragma: no cover - compiled
    """Per row of `queries` (nq, d): slots (nq, k) int32 of the k nearest found (-1 padded)
    that are not `dead` (m,) bool, distances (nq, k) float32 (inf padded) and distances
    computed (nq,) int64."""
    nq = queries.shape[0]
    m = slots.shape[0]
    out_s = np.empty((nq, k), np.int32)
    out_d = np.empty((nq, k), np.float32)
    out_n = np.empty(nq, np.int64)
    vis = np.zeros(m, np.int32)
    pos = np.zeros(m, np.int32)  # every node is linked: no insertion-order limit
    ef = max(ef, k)
    rd = np.empty(ef, np.float32)
    rs = np.empty(ef, np.int32)
    for r in range(nq):
        q = queries[r]
        qn = np.float32(0.0)
        for j in range(q.shape[0]):
            qn += q[j] * q[j]
        nr, touched = _walk(q, qn, ip, slots, vectors, vnorm, nbr, deg, pos, 1, seeds, ef,
                            vis, r + 1, rd, rs, dead)
        _top_sorted(rd, rs, nr, k, out_s[r], out_d[r])
        for c in range(k):
            if out_s[r, c] >= 0:
                out_s[r, c] = slots[out_s[r, c]]
        out_n[r] = touched
    return out_s, out_d, out_n
# fmt: on


class Journal:
    """The writes to one tenant since `base`, the view its links are (being) built from: the
    slots it gained since (scanned exactly beside the links) and the base slots it lost
    (walked through, never returned). A tenant's writes thus keep its links usable until
    `limit` slots have changed; then the journal is dropped and the tenant relinked."""

    __slots__ = ("_cache", "added", "base", "limit", "removed")

    def __init__(self, base: TenantView) -> None:
        self.base = base
        self.added: set[int] = set()
        self.removed: set[int] = set()
        self.limit = max(JOURNAL_MIN, len(base.slots) // JOURNAL_FRACTION)
        self._cache: tuple[TenantView, Overlay] | None = None

    def note(self, slots: np.ndarray, sign: int) -> bool:
        """Record `slots` given to (+1) or taken from (-1) the tenant (as the tenant tree
        applies them). False once more than `limit` have changed: drop the journal."""
        self._cache = None
        if len(self.added) + len(self.removed) + len(slots) > self.limit:
            return False
        if sign > 0:
            self.added.update(slots.tolist())
        else:
            for s in slots.tolist():
                if s in self.added:  # given after the base, taken again
                    self.added.discard(s)
                else:
                    self.removed.add(s)
        return True


@dataclass(frozen=True)
class Overlay:
    """A journal as arrays for one search: slots to scan exactly, local ids to skip."""

    added: np.ndarray  # (a,) int32 slots
    dead: np.ndarray  # (m,) bool over the links' local ids


@dataclass(frozen=True)
class TenantGraph:
    """Links of one tenant view: `view.slots` are the nodes (local id = position)."""

    view: TenantView
    nbr: np.ndarray
    deg: np.ndarray
    seeds: np.ndarray
    order: np.ndarray  # local ids by slot
    none_dead: np.ndarray  # (m,) bool, all False

    @classmethod
    def link(cls, view: TenantView, store: VectorStore, ip: bool) -> TenantGraph:
        nbr, deg, seeds = build(
            view.slots, store.vectors, store.vnorm, ip, DEGREE, EF_CONSTRUCTION, SEEDS
        )
        order = np.argsort(view.slots, kind="stable").astype(np.int32)
        return cls(view, nbr, deg, seeds, order, np.zeros(len(view.slots), bool))

    @property
    def nbytes(self) -> int:
        arrays = (self.nbr, self.deg, self.seeds, self.order, self.none_dead)
        return sum(a.nbytes for a in arrays)

    def overlay(self, journal: Journal, view: TenantView) -> Overlay:
        """`journal` (whose base is this graph's view) as arrays; cached per current view."""
        c = journal._cache
        if c is not None and c[0] is view:
            return c[1]
        dead = self.none_dead
        if journal.removed:
            gone = np.fromiter(journal.removed, np.int32, len(journal.removed))
            slots = self.view.slots
            at = np.minimum(np.searchsorted(slots, gone, sorter=self.order), len(slots) - 1)
            hit = slots[self.order[at]] == gone
            dead = self.none_dead.copy()
            dead[self.order[at[hit]]] = True
        added = np.sort(np.fromiter(journal.added, np.int32, len(journal.added)))
        ov = Overlay(added, dead)
        journal._cache = (view, ov)
        return ov

    def search(
        self,
        q: np.ndarray,
        k: int,
        ef: int,
        ip: bool,
        store: VectorStore,
        dead: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `kernels.tree_batch`: slots (nq, k), distances (nq, k), touched (nq,); never
        a node marked in `dead` (m,) bool."""
        v = self.view
        return search_batch(
            q,
            k,
            ef,
            ip,
            v.slots,
            store.vectors,
            store.vnorm,
            self.nbr,
            self.deg,
            self.seeds,
            self.none_dead if dead is None else dead,
        )


class TenantGraphs:
    """The links of every large tenant, built by one background thread on demand."""

    def __init__(self, ip: bool) -> None:
        self.ip = ip
        self._by_tree: weakref.WeakKeyDictionary[TenantTree, TenantGraph] = (
            weakref.WeakKeyDictionary()
        )
        # id(tree) -> (tree, base view, store): one pending build per tenant, of the base of
        # its journal (the view the writes since are recorded against)
        self._pending: dict[int, tuple[TenantTree, TenantView, VectorStore]] = {}
        self._not_before: weakref.WeakKeyDictionary[TenantTree, float] = weakref.WeakKeyDictionary()
        self._mu = threading.Lock()
        self._todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # keys of _pending
        self._worker: threading.Thread | None = None

    def fresh(
        self, tree: TenantTree, view: TenantView, store: VectorStore, enqueue: bool = True
    ) -> tuple[TenantGraph | None, Overlay | None]:
        """The tenant's links and, if it was written since they were built, the overlay of
        those writes (None: `view` is the links' own); (None, None) if it has no usable
        links, and (if `enqueue`) a background build is queued."""
        g = self._by_tree.get(tree)
        j = tree.journal
        if g is not None and j is not None and j.base is g.view:
            return g, (None if view is g.view else g.overlay(j, view))
        if enqueue:
            self._request(tree, view, store)
        return None, None

    def build_now(self, tree: TenantTree, view: TenantView, store: VectorStore) -> TenantGraph:
        """Build (or return the fresh) links of `view`, the tenant's current view, in the
        calling thread."""
        g = self._by_tree.get(tree)
        j = tree.journal
        if g is None or g.view is not view or j is None or j.base is not view:
            g = TenantGraph.link(view, store, self.ip)
            with self._mu:
                tree.journal = Journal(view)
                self._by_tree[tree] = g
        return g

    def forget(self, tree: TenantTree) -> None:
        with self._mu:
            self._by_tree.pop(tree, None)
            tree.journal = None

    @property
    def nbytes(self) -> int:
        with self._mu:
            return sum(g.nbytes for g in list(self._by_tree.values()))

    def _request(self, tree: TenantTree, view: TenantView, store: VectorStore) -> None:
        """Queue a build of the links of the base of the tenant's journal (a new journal
        from `view` if it has none: writes from now on are recorded against it)."""
        now = time.monotonic()
        with self._mu:
            if now < self._not_before.get(tree, 0.0):
                return
            if tree.journal is None:
                tree.journal = Journal(view)
            key = id(tree)
            if key not in self._pending:
                self._todo.put(key)  # under the lock: the worker cannot exit now
            self._pending[key] = (tree, tree.journal.base, store)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="curator-tenant-graphs", daemon=True
                )
                self._worker.start()

    def _run(self) -> None:
        while True:
            try:
                key = self._todo.get(timeout=5.0)
            except queue.Empty:
                with self._mu:  # idle: exit; the next request starts a new worker
                    if self._todo.empty():
                        self._worker = None
                        return
                continue
            if key is None:
                return
            with self._mu:
                job = self._pending.pop(key, None)
            if job is None:
                continue
            tree, view, store = job
            try:
                with background_slot():  # not beside a training: searches keep a core
                    j = tree.journal
                    current = j is not None and j.base is view  # its writes still fit
                    t0 = time.monotonic()
                    g = TenantGraph.link(view, store, self.ip) if current else None
                if g is not None:
                    took = time.monotonic() - t0
                    with self._mu:
                        j = tree.journal
                        if j is not None and j.base is view:
                            self._by_tree[tree] = g
                        # A tenant whose writes overflow its journal all the time would keep
                        # a core busy relinking: its next build waits REBUILD_GAP x this one.
                        self._not_before[tree] = time.monotonic() + REBUILD_GAP * took
            except Exception:  # a failed build leaves the tree path in use
                log.exception("linking a tenant's graph failed")
