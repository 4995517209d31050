"""A proximity graph over the vector store's slots, for large filters and unfiltered search.

One level of HNSW-style links (a flat graph: measured to match faiss's multi-level HNSW at the
Debian scale, research/graph-path.md §1) held as an int32 matrix (capacity, degree) of
neighbour slots; the vectors stay in the `VectorStore` and are passed in on every call.

Maintenance, without a rebuild:
  - insert: new slots join a *fresh* set that searches scan exactly; once it holds
    `link_min` slots the background linker (`curator.index.linker`) links them in small steps
    (search with `ef_construction`, heuristic neighbour selection, reverse edges), off the
    write path. `link_pending()` links them all at once (build, bulk loads, tests).
  - first build: `start()` makes every live slot fresh and lets the background linker link
    them in batches of up to 2 % of the graph, so no request waits for it; while the
    fresh set outweighs the linked part (`building`, until it is 1/16 of it), the planner
    keeps to the tree.
  - delete: the slot stops being traversed at once; when deleted nodes reach `repair_ratio`
    of the graph, nodes that pointed at them re-select neighbours among their live neighbours
    and the deleted nodes' neighbours, then the dead rows are cleared.
  - re-layout (`CuratorIndex.train`): rows are permuted and renumbered (`relayout`).
Grants and revokes change no link: filters are slot bitmaps built at query time.

Concurrency: searches take no lock. Mutations (add, remove, repair, relayout, a link step's
commit) hold `_mu`; a link step searches its candidates outside it and commits only if no
remove or relayout ran meanwhile (`_gen`). The fresh set has its own short lock
(`_fresh_mu`, taken after `_mu` when both are held), so an insert waits for a commit only when
the link arrays must grow. A slot is always findable by a search: it leaves
`fresh` only after it is linked, and a search reads `fresh` before the link arrays.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numba
import numpy as np

from curator.errors import FailedPrecondition, Internal
from curator.index import graph_kernels as G
from curator.index import kernels as K
from curator.index import linker as _linker
from curator.index.vector_store import VectorStore

__all__ = ["ProximityGraph"]

#: Entry points: one per 64 linked vectors, 16 to 256. The graph has one level, so on
#: well-separated clusters few seeds leave clusters unreachable (12k x 24 clusters, graph ef
#: 128: recall@10 0.91 with 16 seeds, 0.98 with 256); each seed costs one distance per query.
_MIN_SEEDS, _MAX_SEEDS = 16, 256

#: Slots one background link step takes (writers wait for at most one step's commit).
LINK_STEP = 16
#: Below this many linked slots, slots are linked one at a time (each sees the last).
_SMALL_GRAPH = 1000
#: The largest batch searched against the graph as it was before being linked.
_MAX_BATCH = 4096


class ProximityGraph:
    """Links over slots of one `VectorStore`. Not thread-safe for writes; searches may run
    concurrently with each other (each takes its own visited buffer)."""

    def __init__(
        self,
        ip: bool,
        degree: int = 32,
        ef_construction: int = 100,
        link_min: int = 256,
        repair_ratio: float = 0.05,
        capacity: int = 1024,
    ) -> None:
        self.ip = ip
        self.degree = degree
        self.ef_construction = ef_construction
        self.link_min = link_min
        self.repair_ratio = repair_ratio
        self.nbr = np.full((capacity, degree), -1, np.int32)
        self.linked = np.zeros(capacity, bool)
        self.seeds = np.full(_MIN_SEEDS, -1, np.int32)
        self.n_linked = 0
        self.n_dead = 0  # deleted since the last repair (their rows still hold links)
        self.fresh = np.empty(0, np.int32)  # live slots not linked yet
        self._pool: list[tuple[np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()  # the visited-buffer pool
        self._mu = threading.RLock()  # mutations (module docstring)
        self._fresh_mu = threading.Lock()  # replacing `fresh`
        self._gen = 0  # bumped by remove and relayout: a link step's candidates are stale
        self._store: VectorStore | None = None  # the store the linker reads (latest seen)
        self._reseeded_at = 0
        #: Most live slots are not linked yet (a first build, or a load larger than the
        #: graph): a search here would mostly scan exactly, so the planner uses the tree.
        self.building = False

    @classmethod
    def start(
        cls, store: VectorStore, ip: bool, degree: int, ef_construction: int
    ) -> ProximityGraph:
        """A graph whose every live slot is fresh, linked by the background linker."""
        g = cls(ip, degree, ef_construction, capacity=len(store.live))
        g.add(store.live_slots(), store)
        return g

    @classmethod
    def build(
        cls, store: VectorStore, ip: bool, degree: int, ef_construction: int
    ) -> ProximityGraph:
        """A graph linking every live slot of `store`."""
        g = cls(ip, degree, ef_construction, capacity=len(store.live))
        g.add(store.live_slots(), store, background=False)
        g.link_pending(store)
        return g

    # -- sizes -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_linked + len(self.fresh)

    @property
    def nbytes(self) -> int:
        """Links, flags and the visited buffers currently allocated."""
        pool = sum(v.nbytes + t.nbytes for v, t in self._pool)
        return self.nbr.nbytes + self.linked.nbytes + self.fresh.nbytes + pool

    def _ensure(self, capacity: int) -> None:
        cap = len(self.linked)
        if capacity <= cap:
            return
        new = max(capacity, cap + cap // 2)
        nbr = np.full((new, self.degree), -1, np.int32)
        nbr[:cap] = self.nbr
        linked = np.zeros(new, bool)
        linked[:cap] = self.linked
        self.nbr, self.linked = nbr, linked
        with self._lock:
            self._pool.clear()

    @contextlib.contextmanager
    def _visited(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            buf = self._pool.pop() if self._pool else None
        if buf is None or buf[0].shape[1] != len(self.linked):
            rows = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
            buf = (np.zeros((rows, len(self.linked)), np.uint32), np.zeros(rows, np.uint32))
        try:
            yield buf
        finally:
            with self._lock:
                if buf[0].shape[1] == len(self.linked):
                    self._pool.append(buf)

    # -- writes ------------------------------------------------------------------------------
    def add(self, slots: np.ndarray, store: VectorStore, background: bool = True) -> None:
        """New live slots (n,) int32: searchable at once (fresh); once `link_min` are pending
        the background linker is woken (`background=False`: the caller links)."""
        if len(store.live) > len(self.linked):
            with self._mu:  # the link arrays grow: not while a commit writes them
                self._ensure(len(store.live))
        with self._fresh_mu:
            self._store = store
            self.fresh = np.concatenate([self.fresh, np.asarray(slots, np.int32)])
            wake = background and len(self.fresh) >= self.link_min
            if len(self.fresh) > max(self.link_min, self.n_linked):
                self.building = True
        if wake:
            _linker.schedule(self)

    @property
    def pending(self) -> int:
        """Slots waiting to be linked (scanned exactly by searches meanwhile)."""
        return len(self.fresh)

    def link_pending(self, store: VectorStore, limit: int | None = None) -> int:
        """Link every fresh slot (at most `limit`) into the graph now, holding the mutation
        lock; returns how many."""
        with self._mu:
            self._store = store
            todo = self._live_fresh(store)
            if not len(todo):
                return 0
            self._gen += 1  # a link step searching meanwhile may hold some of these slots
            if limit is not None:
                todo = todo[:limit]
            self._ensure(len(store.live))
            # Random order: slots are laid out by tree leaf, and linking cluster after cluster
            # leaves few long-range edges. Batches double up to 2 % of the graph: a batch is
            # searched in parallel against the graph as it was, then linked serially.
            todo = np.random.default_rng(self.n_linked).permutation(todo)
            done = self._link_first(todo, store)
            with self._visited() as (vis, tags):
                while done < len(todo):
                    small = self.n_linked < _SMALL_GRAPH
                    size = 1 if small else min(_MAX_BATCH, self.n_linked // 50)
                    part = todo[done : done + size]
                    cs, cd = self._candidates(part, store, self.nbr, self.linked, vis, tags)
                    self._commit(part, cs, cd, store)
                    done += len(part)
            self._reseed(store)
            return len(todo)

    def link_step(self, limit: int = LINK_STEP) -> int:
        """Link up to `limit` fresh slots (while `building`, up to 2 % of the graph, as
        `link_pending` does): candidates searched without the mutation lock (writers and
        searches go on), then committed under it. Returns how many were linked (0: nothing
        pending, or the step raced a remove/relayout and will be retried)."""
        with self._mu:
            store = self._store
            if store is None:
                return 0
            todo = self._live_fresh(store)
            if not len(todo):
                return 0
            if self.n_linked < _SMALL_GRAPH:  # link one by one under the lock, a few at a time
                return self.link_pending(store, _SMALL_GRAPH // 4)
            if self.building:
                limit = max(limit, min(_MAX_BATCH, self.n_linked // 50))
            rng = np.random.default_rng(self.n_linked)
            part = rng.choice(todo, min(limit, len(todo)), replace=False).astype(np.int32)
            gen, nbr, linked = self._gen, self.nbr, self.linked
        with self._visited() as (vis, tags):
            if len(vis[0]) < len(linked):
                return 0  # the pool was resized between the two reads: retry
            cs, cd = self._candidates(part, store, nbr, linked, vis, tags)
        with self._mu:
            if self._gen != gen or self._store is not store:
                return 0  # a remove or relayout ran: the candidates may be stale
            self._commit(part, cs, cd, store)
            if self.n_linked >= 2 * self._reseeded_at or not len(self.fresh):
                self._reseed(store)
        return len(part)

    def _live_fresh(self, store: VectorStore) -> np.ndarray:
        """Drop deleted slots from `fresh` (they may be reused: `store.live` says which are
        live now) and return it."""
        with self._fresh_mu:
            self.fresh = self.fresh[store.live[self.fresh]]
            self._settle()
            return self.fresh

    def _settle(self) -> None:
        """End `building` once the fresh set is under 1/16 of the linked part (held
        `_fresh_mu`; it began when the fresh set outgrew the linked part: `add`)."""
        if self.building and len(self.fresh) <= max(self.link_min, self.n_linked // 16):
            self.building = False

    def _link_first(self, todo: np.ndarray, store: VectorStore) -> int:
        if self.n_linked:
            return 0
        x = int(todo[0])
        self.nbr[x] = -1
        self.linked[x] = True
        self.n_linked = 1
        with self._fresh_mu:
            self.fresh = self.fresh[self.fresh != x]
        self._reseed(store)
        return 1

    def _candidates(
        self,
        part: np.ndarray,
        store: VectorStore,
        nbr: np.ndarray,
        linked: np.ndarray,
        vis: np.ndarray,
        tags: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        return G.candidates(
            part,
            self.ef_construction,
            self.ip,
            store.vectors,
            store.vnorm,
            nbr,
            linked,
            self.seeds,
            vis,
            tags,
        )

    def _commit(self, part: np.ndarray, cs: np.ndarray, cd: np.ndarray, st: VectorStore) -> None:
        """Link `part` (held lock); the slots leave `fresh` only once linked."""
        G.commit_links(part, cs, cd, self.ip, st.vectors, st.vnorm, self.nbr, self.linked)
        self.n_linked += len(part)
        with self._fresh_mu:
            self.fresh = self.fresh[~np.isin(self.fresh, part)]
            self._settle()
        if self.n_linked >= 2 * max(self._reseeded_at, 1):
            self._reseed(st)  # entry points follow the graph as it grows

    def remove(self, slots: np.ndarray, store: VectorStore) -> None:
        """Slots being deleted (call before the store releases them)."""
        with self._mu:
            self._gen += 1
            self._remove(np.asarray(slots, np.int32), store)

    def _remove(self, slots: np.ndarray, store: VectorStore) -> None:
        with self._fresh_mu:
            self.fresh = self.fresh[~np.isin(self.fresh, slots)]
            self._settle()
        slots = slots[slots < len(self.linked)]
        gone = slots[self.linked[slots]]
        self.linked[gone] = False
        self.n_linked -= len(gone)
        self.n_dead += len(gone)
        if np.isin(self.seeds, gone).any():
            self._reseed(store)
        if self.n_dead > self.repair_ratio * max(self.n_linked, 1):
            self._repair(store)

    def repair(self, store: VectorStore) -> int:
        """Unlink deleted slots from their in-neighbours now; returns nodes repaired."""
        with self._mu:
            return self._repair(store)

    def _repair(self, store: VectorStore) -> int:
        if not self.n_dead:
            return 0
        self._gen += 1
        fixed = G.repair(
            self.ip,
            store.vectors,
            store.vnorm,
            self.nbr,
            self.linked,
            min(store.high, len(self.linked)),
        )
        self.n_dead = 0
        return int(fixed)

    def relayout(
        self, order: np.ndarray, new_slot: np.ndarray, old: VectorStore, store: VectorStore
    ) -> None:
        """Follow `store = old.reordered(order)`: new slot i is old slot order[i]; `new_slot`
        maps old slots to new (-1 for gone)."""
        with self._mu:
            self._gen += 1
            self._store = store
            self._relayout(np.asarray(order, np.int64), np.asarray(new_slot, np.int32), old, store)

    def _relayout(
        self, order: np.ndarray, new_slot: np.ndarray, old: VectorStore, store: VectorStore
    ) -> None:
        self._repair(old)
        nbr = G.remap_rows(self.nbr, order, new_slot)
        linked = self.linked[order]
        with self._fresh_mu:
            fresh = new_slot[self.fresh]
            self.fresh = fresh[fresh >= 0]
        self.nbr = np.full((len(store.live), self.degree), -1, np.int32)
        self.nbr[: len(nbr)] = nbr
        self.linked = np.zeros(len(store.live), bool)
        self.linked[: len(linked)] = linked
        self.n_dead = 0
        with self._lock:
            self._pool.clear()
        self._reseed(store)

    def _reseed(self, store: VectorStore) -> None:
        """Entry points spread over the linked slots (slots are laid out by tree leaf after
        training, so evenly spaced slots come from different clusters)."""
        self._reseeded_at = self.n_linked
        nodes = np.flatnonzero(self.linked[: store.high]).astype(np.int32)
        n = int(np.clip(len(nodes) // 64, _MIN_SEEDS, _MAX_SEEDS))
        self.seeds = np.full(n, -1, np.int32)
        if len(nodes):
            pick = np.linspace(0, len(nodes) - 1, min(n, len(nodes))).astype(np.int64)
            self.seeds[: len(pick)] = nodes[pick]

    # -- search ------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int,
        store: VectorStore,
        allow: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        two_hop: bool = False,
        budget: int = 1 << 62,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest `k` of each query (nq, d) among linked and fresh slots, restricted to
        `allow` (capacity,) bool if given; `allowed` (m,) int32, the same set as slots, seeds
        the filtered search. A query that computes more than `budget` distances gives up.
        Returns slots (nq, k) int32, distances (nq, k) float32, vectors touched per query (nq,)
        int64, negative for a query that gave up (its row is incomplete)."""
        # `fresh` first: a slot leaves it only once linked into these (or newer) arrays.
        pending = self.fresh
        nbr, linked, seeds = self.nbr, self.linked, self.seeds
        filtered = allow is not None
        if allow is None:
            mask = np.zeros(1, bool)
        else:
            mask = allow
            if len(mask) < len(linked):
                mask = np.zeros(len(linked), bool)
                mask[: len(allow)] = allow
            if allowed is not None and len(allowed):
                pick = np.linspace(0, len(allowed) - 1, min(_MIN_SEEDS, len(allowed)))
                seeds = np.concatenate([allowed[pick.astype(np.int64)], seeds]).astype(np.int32)
        with self._visited() as (vis, tags):
            if len(vis[0]) < len(linked):
                vis = np.zeros((len(vis), len(linked)), np.uint32)  # raced a resize
                tags = np.zeros(len(vis), np.uint32)
            out = G.search_batch(
                queries,
                k,
                ef,
                self.ip,
                store.vectors,
                store.vnorm,
                nbr,
                linked,
                mask,
                filtered,
                two_hop,
                seeds,
                budget,
                vis,
                tags,
            )
        fresh = pending if allow is None else pending[mask[pending]]
        if not len(fresh):
            return out
        s2, d2, n2 = K.exact_batch(queries, k, self.ip, fresh, store.vectors, store.vnorm)
        s, d = K.merge_rows(np.hstack([out[0], s2]), np.hstack([out[1], d2]), k)
        return s, d, np.sign(out[2]) * (np.abs(out[2]) + n2)

    def check(self, store: VectorStore) -> None:
        """Raise Internal unless every live slot is linked or fresh (not both), nothing dead
        is linked, and no edge leaves the used slots."""
        with self._mu:
            self._check(store)

    def _check(self, store: VectorStore) -> None:
        h = store.high
        live = store.live[:h]
        linked = self.linked[:h]
        fresh = np.zeros(h, bool)
        fresh[self.fresh] = True
        if (linked & ~live).any() or (fresh & ~live).any():
            raise Internal("a deleted slot is linked or fresh in the graph")
        if (linked & fresh).any() or (live & ~linked & ~fresh).any():
            raise Internal("a live slot is both linked and fresh, or neither")
        if self.linked[h:].any() or int(linked.sum()) != self.n_linked:
            raise Internal(f"expected {self.n_linked} linked slots, found {int(linked.sum())}")
        edges = self.nbr[:h][linked]
        if (edges >= h).any() or (edges < -1).any():
            raise Internal("a graph edge points outside the store")

    # -- snapshot ----------------------------------------------------------------------------
    def to_arrays(self, high: int) -> dict[str, np.ndarray]:
        with self._mu:  # copies: the linker goes on after this returns
            return {
                "graph_nbr": self.nbr[:high].copy(),
                "graph_linked": self.linked[:high].copy(),
                "graph_fresh": self.fresh,
                "graph_params": np.array(
                    [self.degree, self.ef_construction, self.link_min, self.n_dead], np.int64
                ),
            }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], ip: bool, store: VectorStore) -> ProximityGraph:
        """Inverse of `to_arrays`; FailedPrecondition if the arrays do not fit `store`."""
        params = np.asarray(a["graph_params"])
        nbr, linked = np.asarray(a["graph_nbr"]), np.asarray(a["graph_linked"])
        fresh = np.asarray(a["graph_fresh"])
        h = store.high
        ok = (
            params.shape == (4,)
            and 1 <= params[0] <= 256
            and params[1] >= 1
            and params[2] >= 1
            and params[3] >= 0
            and nbr.shape == (h, params[0])
            and linked.shape == (h,)
            and fresh.ndim == 1
            and all(x.dtype.kind in "iub" for x in (nbr, linked, fresh))
            and ((nbr >= -1) & (nbr < h)).all()
            and ((fresh >= 0) & (fresh < h)).all()
        )
        if not ok:
            raise FailedPrecondition("expected graph arrays matching the vector store")
        degree, efc, link_min, n_dead = (int(v) for v in params)
        g = cls(ip, degree, efc, link_min, capacity=len(store.live))
        linked = linked.astype(bool) & store.live[:h]
        g.nbr[: len(nbr)] = nbr
        g.linked[: len(linked)] = linked
        g.n_linked = int(linked.sum())
        g.n_dead = n_dead
        g.fresh = fresh.astype(np.int32)
        g.building = len(g.fresh) > max(g.link_min, g.n_linked)
        g._store = store
        g._reseed(store)
        if len(g.fresh) >= g.link_min:
            _linker.schedule(g)
        return g
