"""A proximity graph over the vector store's slots, for large filters and unfiltered search.

One level of HNSW-style links (a flat graph: measured to match faiss's multi-level HNSW at the
Debian scale, research/graph-path.md §1) held as an int32 matrix (capacity, degree) of
neighbour slots; the vectors stay in the `VectorStore` and are passed in on every call.

Maintenance, without a rebuild:
  - insert: new slots join a *fresh* set that searches scan exactly; once it holds
    `link_min` slots they are linked (search with `ef_construction`, heuristic neighbour
    selection, reverse edges). `link_pending()` links them at any time (a background worker's
    entry point; the index itself calls it from the write path).
  - delete: the slot stops being traversed at once; when deleted nodes reach `repair_ratio`
    of the graph, nodes that pointed at them re-select neighbours among their live neighbours
    and the deleted nodes' neighbours, then the dead rows are cleared.
  - re-layout (`CuratorIndex.train`): rows are permuted and renumbered (`relayout`).
Grants and revokes change no link: filters are slot bitmaps built at query time.
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
from curator.index.vector_store import VectorStore

__all__ = ["ProximityGraph"]

#: Entry points: one per 64 linked vectors, 16 to 256. The graph has one level, so on
#: well-separated clusters few seeds leave clusters unreachable (12k x 24 clusters, graph ef
#: 128: recall@10 0.91 with 16 seeds, 0.98 with 256); each seed costs one distance per query.
_MIN_SEEDS, _MAX_SEEDS = 16, 256


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
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls, store: VectorStore, ip: bool, degree: int, ef_construction: int
    ) -> ProximityGraph:
        """A graph linking every live slot of `store`."""
        g = cls(ip, degree, ef_construction, capacity=len(store.live))
        g.add(store.live_slots(), store)
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
    def add(self, slots: np.ndarray, store: VectorStore) -> None:
        """New live slots (n,) int32: searchable at once (fresh), linked in batches."""
        self._ensure(len(store.live))
        self.fresh = np.concatenate([self.fresh, np.asarray(slots, np.int32)])
        if len(self.fresh) >= self.link_min:
            self.link_pending(store)

    def link_pending(self, store: VectorStore) -> int:
        """Link every fresh slot into the graph; returns how many."""
        todo = self.fresh[store.live[self.fresh]]
        self.fresh = np.empty(0, np.int32)
        if not len(todo):
            return 0
        self._ensure(len(store.live))
        # Random order: slots are laid out by tree leaf, and linking cluster after cluster
        # leaves few long-range edges. Batches double up to 2 % of the graph: a batch is
        # searched in parallel against the graph as it was, then linked serially.
        todo = np.random.default_rng(self.n_linked).permutation(todo)
        done = 0
        if self.n_linked == 0:
            x = int(todo[0])
            self.nbr[x] = -1
            self.linked[x] = True
            self.n_linked, done = 1, 1
            self._reseed(store)
        reseeded_at = self.n_linked
        with self._visited() as (vis, tags):
            while done < len(todo):
                size = 1 if self.n_linked < 1000 else min(4096, self.n_linked // 50)
                part = todo[done : done + size]
                cs, cd = G.candidates(
                    part,
                    self.ef_construction,
                    self.ip,
                    store.vectors,
                    store.vnorm,
                    self.nbr,
                    self.linked,
                    self.seeds,
                    vis,
                    tags,
                )
                G.commit_links(
                    part, cs, cd, self.ip, store.vectors, store.vnorm, self.nbr, self.linked
                )
                done += len(part)
                self.n_linked += len(part)
                if self.n_linked >= 2 * reseeded_at:
                    self._reseed(store)  # entry points follow the graph as it grows
                    reseeded_at = self.n_linked
        self._reseed(store)
        return len(todo)

    def remove(self, slots: np.ndarray, store: VectorStore) -> None:
        """Slots being deleted (call before the store releases them)."""
        slots = np.asarray(slots, np.int32)
        if len(self.fresh):
            self.fresh = self.fresh[~np.isin(self.fresh, slots)]
        slots = slots[slots < len(self.linked)]
        gone = slots[self.linked[slots]]
        self.linked[gone] = False
        self.n_linked -= len(gone)
        self.n_dead += len(gone)
        if np.isin(self.seeds, gone).any():
            self._reseed(store)
        if self.n_dead > self.repair_ratio * max(self.n_linked, 1):
            self.repair(store)

    def repair(self, store: VectorStore) -> int:
        """Unlink deleted slots from their in-neighbours now; returns nodes repaired."""
        if not self.n_dead:
            return 0
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
        order = np.asarray(order, np.int64)
        new_slot = np.asarray(new_slot, np.int32)
        self.repair(old)
        nbr = G.remap_rows(self.nbr, order, new_slot)
        linked = self.linked[order]
        fresh = new_slot[self.fresh]
        self.nbr = np.full((len(store.live), self.degree), -1, np.int32)
        self.nbr[: len(nbr)] = nbr
        self.linked = np.zeros(len(store.live), bool)
        self.linked[: len(linked)] = linked
        self.fresh = fresh[fresh >= 0]
        self.n_dead = 0
        with self._lock:
            self._pool.clear()
        self._reseed(store)

    def _reseed(self, store: VectorStore) -> None:
        """Entry points spread over the linked slots (slots are laid out by tree leaf after
        training, so evenly spaced slots come from different clusters)."""
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
        filtered = allow is not None
        if allow is None:
            mask = np.zeros(1, bool)
            seeds = self.seeds
        else:
            mask = allow
            if len(mask) < len(self.linked):
                mask = np.zeros(len(self.linked), bool)
                mask[: len(allow)] = allow
            seeds = self.seeds
            if allowed is not None and len(allowed):
                pick = np.linspace(0, len(allowed) - 1, min(_MIN_SEEDS, len(allowed)))
                seeds = np.concatenate([allowed[pick.astype(np.int64)], seeds]).astype(np.int32)
        with self._visited() as (vis, tags):
            out = G.search_batch(
                queries,
                k,
                ef,
                self.ip,
                store.vectors,
                store.vnorm,
                self.nbr,
                self.linked,
                mask,
                filtered,
                two_hop,
                seeds,
                budget,
                vis,
                tags,
            )
        fresh = self.fresh if allow is None else self.fresh[mask[self.fresh]]
        if not len(fresh):
            return out
        s2, d2, n2 = K.exact_batch(queries, k, self.ip, fresh, store.vectors, store.vnorm)
        s, d = K.merge_rows(np.hstack([out[0], s2]), np.hstack([out[1], d2]), k)
        return s, d, np.sign(out[2]) * (np.abs(out[2]) + n2)

    def check(self, store: VectorStore) -> None:
        """Raise Internal unless every live slot is linked or fresh (not both), nothing dead
        is linked, and no edge leaves the used slots."""
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
        return {
            "graph_nbr": self.nbr[:high],
            "graph_linked": self.linked[:high],
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
        g._reseed(store)
        return g
