"""The shared clustering tree: hierarchical k-means over all vectors of a collection.

Nodes are numbered breadth-first; the children of a node are contiguous
(`child_start[n] : child_start[n] + child_count[n]`), so scoring the children of a node is one
slice of `centroids`. Every node keeps the running sum and count of the squared distances of the
vectors routed through it (its mean squared radius feeds the `variance_boost` search score).
The tree is static after training: later vectors are routed to the nearest child at each level.
"""

from __future__ import annotations

import concurrent.futures
import logging

import faiss
import numba
import numpy as np

from curator.config import IndexConfig

__all__ = ["SharedTree"]

log = logging.getLogger(__name__)


class SharedTree:
    """Arrays of the tree; `SharedTree.untrained(d)` is a single root leaf (flat mode)."""

    def __init__(
        self,
        centroids: np.ndarray,
        parent: np.ndarray,
        child_start: np.ndarray,
        child_count: np.ndarray,
        rad_sum: np.ndarray | None = None,
        rad_cnt: np.ndarray | None = None,
    ) -> None:
        n = len(parent)
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self.parent = np.ascontiguousarray(parent, np.int32)
        self.child_start = np.ascontiguousarray(child_start, np.int32)
        self.child_count = np.ascontiguousarray(child_count, np.int32)
        self.rad_sum = np.zeros(n, np.float64) if rad_sum is None else rad_sum.astype(np.float64)
        self.rad_cnt = np.zeros(n, np.int64) if rad_cnt is None else rad_cnt.astype(np.int64)
        self.cnorm = (self.centroids.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.depth = np.zeros(n, np.int32)
        for node in range(1, n):  # BFS order: a parent precedes its children
            self.depth[node] = self.depth[self.parent[node]] + 1
        self.max_depth = int(self.depth.max()) if n else 0
        # anc[node, j] = ancestor of node at depth j (node itself at its own depth), else -1.
        self.anc = np.full((n, self.max_depth + 1), -1, np.int32)
        self.anc[np.arange(n), self.depth] = np.arange(n, dtype=np.int32)
        for j in range(self.max_depth, 0, -1):
            rows = np.flatnonzero(self.depth >= j)
            self.anc[rows, j - 1] = self.parent[self.anc[rows, j]]

    @classmethod
    def untrained(cls, dim: int) -> SharedTree:
        return cls(np.zeros((1, dim), np.float32), np.array([-1]), np.zeros(1), np.zeros(1))

    # -- shape -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.parent)

    @property
    def is_trained(self) -> bool:
        return len(self.parent) > 1

    def is_leaf(self, node: int) -> bool:
        return bool(self.child_count[node] == 0)

    def children(self, node: int) -> range:
        s = int(self.child_start[node])
        return range(s, s + int(self.child_count[node]))

    def mean_sq_radius(self) -> np.ndarray:
        """(n_nodes,) float32 mean squared distance of routed vectors to each centroid."""
        return (self.rad_sum / np.maximum(self.rad_cnt, 1)).astype(np.float32)

    @property
    def nbytes(self) -> int:
        arrays = (
            self.centroids,
            self.parent,
            self.child_start,
            self.child_count,
            self.rad_sum,
            self.rad_cnt,
            self.cnorm,
            self.depth,
            self.anc,
        )
        return sum(a.nbytes for a in arrays)

    # -- training and routing -----------------------------------------------------------
    @classmethod
    def train(cls, x: np.ndarray, config: IndexConfig) -> SharedTree:
        """Hierarchical k-means over `x` (n, d) float32 (L2), level by level. The nodes of a
        level are independent: they are clustered on as many threads as faiss may use in
        the calling thread (`faiss.omp_get_max_threads()`, which the trainer caps), each
        k-means single-threaded. (One k-means on several OpenMP threads spins at every
        barrier: on a busy 2-core machine Debian's tree took 30 s that way, 3 s on one.)
        Children are numbered in breadth-first order whatever the thread count, so the
        tree is the same for a seed."""
        n = len(x)
        centroids = [x.mean(0, dtype=np.float64).astype(np.float32)]
        parent = [-1]
        child_start = [0]
        child_count = [0]
        level = [(0, np.arange(n))]
        depth = 0
        workers = max(1, faiss.omp_get_max_threads())
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            while level:
                split = [
                    (node, rows)
                    for node, rows in level
                    if len(rows) > config.max_leaf_size and depth < config.max_depth
                ]
                results = pool.map(lambda job: _kmeans(x, job[0], job[1], config), split)
                level = []
                for (node, rows), (cents, assign) in zip(split, results, strict=True):
                    first = len(parent)
                    child_start[node] = first
                    child_count[node] = len(cents)
                    for c in range(len(cents)):
                        centroids.append(cents[c])
                        parent.append(node)
                        child_start.append(0)
                        child_count.append(0)
                        level.append((first + c, rows[assign == c]))
                depth += 1
        tree = cls(
            np.stack(centroids), np.array(parent), np.array(child_start), np.array(child_count)
        )
        log.info(
            "trained shared tree: %d nodes, depth %d, from %d vectors", len(tree), tree.max_depth, n
        )
        return tree

    def route(self, x: np.ndarray) -> np.ndarray:
        """Leaf of each vector (n,) int32: nearest child (L2) at every level."""
        if not self.is_trained:
            return np.zeros(len(x), np.int32)
        # A parallel region costs ~50 us quiet, and on a loaded machine waits for every worker
        # thread to be scheduled: 256 vectors took 10-12 ms in parallel against 1.3 ms serial
        # at load average 9 on 2 cores (bench/RESULTS.md §11, write path). Only bulk routing
        # (training, bulk loads) is worth it.
        route = _route if len(x) >= _PARALLEL_ROUTE_MIN else _route_serial
        return route(
            np.ascontiguousarray(x, np.float32),
            self.centroids,
            self.cnorm,
            self.child_start,
            self.child_count,
        )

    def update_radius(self, x: np.ndarray, leaves: np.ndarray, sign: int = 1) -> None:
        """Add (sign=1) or remove (sign=-1) vectors from the per-node radius statistics."""
        if not len(x):
            return
        if len(x) < 4096:  # touch only the nodes on their paths (bincount: 1.7 us a vector)
            _radius_paths(
                np.ascontiguousarray(x, np.float32),
                np.asarray(leaves, np.int64),
                self.anc,
                self.centroids,
                self.rad_sum,
                self.rad_cnt,
                sign,
            )
            return
        n = len(self)
        for j in range(self.max_depth + 1):
            nodes = self.anc[leaves, j]
            ok = nodes >= 0
            if not ok.any():
                break
            nodes, xs = nodes[ok], x[ok]
            sq = ((xs - self.centroids[nodes]) ** 2).sum(1, dtype=np.float64)
            self.rad_sum += sign * np.bincount(nodes, weights=sq, minlength=n)
            self.rad_cnt += sign * np.bincount(nodes, minlength=n)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "tree_centroids": self.centroids,
            "tree_parent": self.parent,
            "tree_child_start": self.child_start,
            "tree_child_count": self.child_count,
            "tree_rad_sum": self.rad_sum,
            "tree_rad_cnt": self.rad_cnt,
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> SharedTree:
        return cls(
            a["tree_centroids"],
            a["tree_parent"],
            a["tree_child_start"],
            a["tree_child_count"],
            a["tree_rad_sum"],
            a["tree_rad_cnt"],
        )


@numba.njit(cache=True, nogil=True, fastmath=True)
def _leaf_of(v, centroids, cnorm, child_start, child_count):  # pragma: no cover - compiled
    """Descend from the root to the nearest child (L2) at every level; returns the leaf.
    fastmath lets the dot products vectorise (inputs are finite, checked at the edge): one
    vector through a 32-way, 2-level tree at d=128 took ~8 us scalar, half an insert."""
    node = 0
    while child_count[node] > 0:
        best = -1
        best_s = np.inf
        s0 = child_start[node]
        for c in range(s0, s0 + child_count[node]):
            dot = np.float32(0.0)  # float32 like the search kernels: 8 lanes per instruction
            for j in range(v.shape[0]):
                dot += v[j] * centroids[c, j]
            s = cnorm[c] - np.float32(2.0) * dot
            if s < best_s:
                best_s = s
                best = c
        node = best
    return node


#: Vectors routed at once from which `route` uses the parallel driver (~10 ms of work serial).
_PARALLEL_ROUTE_MIN = 2048


# Two drivers (prange and range): numba's cache keys a function by name and place.
@numba.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _route(x, centroids, cnorm, child_start, child_count):  # pragma: no cover - compiled
    out = np.empty(x.shape[0], np.int32)
    for i in numba.prange(x.shape[0]):
        out[i] = _leaf_of(x[i], centroids, cnorm, child_start, child_count)
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _route_serial(x, centroids, cnorm, child_start, child_count):  # pragma: no cover - compiled
    out = np.empty(x.shape[0], np.int32)
    for i in range(x.shape[0]):
        out[i] = _leaf_of(x[i], centroids, cnorm, child_start, child_count)
    return out


@numba.njit(cache=True, nogil=True)
def _radius_paths(x, leaves, anc, centroids, rad_sum, rad_cnt, sign):  # pragma: no cover
    for i in range(x.shape[0]):
        for j in range(anc.shape[1]):
            node = anc[leaves[i], j]
            if node < 0:
                break
            sq = 0.0
            for c in range(x.shape[1]):
                diff = x[i, c] - centroids[node, c]
                sq += diff * diff
            rad_sum[node] += sign * sq
            rad_cnt[node] += sign


def _kmeans(
    x: np.ndarray, node: int, rows: np.ndarray, config: IndexConfig
) -> tuple[np.ndarray, np.ndarray]:
    """k-means of x[rows] on one thread: (centroids (k, d), each row's cluster (n,))."""
    faiss.omp_set_num_threads(1)  # this worker thread's own setting
    k = min(config.branching, len(rows))
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=config.kmeans_niter,
        seed=config.seed + node,
        verbose=False,
        max_points_per_centroid=config.kmeans_max_points_per_centroid,
        min_points_per_centroid=1,
    )
    sub = np.ascontiguousarray(x[rows])
    km.train(sub)
    _, assign = km.index.search(sub, 1)
    return np.asarray(km.centroids).copy(), assign.ravel()
