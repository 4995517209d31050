"""The query planner: exact scan, tree or graph, chosen per query batch from the filter size.

Costs (measured, bench/RESULTS.md "Graph path"): an exact scan costs ~0.25 µs per readable
vector at d 384; a tree search costs a fraction of the tenant; a graph search visits a few
hundred to a few thousand vectors whatever the collection size, but a filtered graph search
grows as the filter gets more selective (it walks through vectors it may not return). So:
  - filter size m <= `exact_search_threshold`: exact scan (exact results, cheapest);
  - else, if the collection has a graph and m / n >= GRAPH_MIN_FRACTION: graph;
  - else the tenant's sub-tree (or, for a predicate / union, a temporary one).
A filtered graph search that computes more distances than the filter has vectors (a query far
from all of them) gives up and is scanned exactly instead, so the graph never costs more than
about twice an exact scan.
A single tenant of at least `tenant_graph.MIN_SIZE` vectors (and at most LINKS_MAX_SHARE of the
collection) not scanned exactly is searched over its own links once they are built, on the tree
and on the graph path ("tenant-graph": ~4x fewer
distances than the tree at equal recall on Debian tenants of 1-4k vectors, bench/RESULTS.md §11;
like the global graph, not with `graph_degree` 0 or the unnormalised inner product). Writes
to the tenant since its links were built are overlaid (tenant_graph.Journal): vectors it
lost are walked through but never returned, vectors it gained are scanned exactly.
Graph width: `max(k, search_ef // 2)` (Curator v2's harness pairs tree ef = 8 x graph ef; at
the default search_ef 128 this is 64, recall@10 >= 0.98 on Debian unfiltered).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from curator.config import Metric, SearchParams
from curator.errors import Internal
from curator.index import kernels as K
from curator.index.tenant_tree import TenantTree, TenantView

if TYPE_CHECKING:
    from curator.index.curator_index import CuratorIndex

__all__ = [
    "GRAPH_MIN_FRACTION",
    "SET_EXACT_MAX",
    "TREE_PATIENCE_DIVISOR",
    "Plan",
    "choose",
    "choose_for_set",
    "search_one",
    "search_slots",
    "search_tenants",
]

#: Smallest filter, as a fraction of the collection, that the graph serves. On Debian the
#: tree was 2-6x faster than the filtered graph at every filter size measured (to 13 %), the
#: graph far faster unfiltered; 0.2 is Curator v2's routing threshold, not located more
#: precisely here (bench/RESULTS.md "Graph path").
GRAPH_MIN_FRACTION = 0.2

#: A tree search stops once the vectors scanned since its top-`search_ef` list last improved
#: reach max(search_ef, tenant size / TREE_PATIENCE_DIVISOR) (kernels._tree_one). A run of
#: non-improving vectors is evidence of having passed the nearest ones only if it is long
#: against how thinly the tenant is spread: a tenant holding a few vectors in each of many
#: leaves has its true neighbours in many small shortlists whose node scores barely differ.
#: Measured (bench/RESULTS.md §11): with search_ef alone, recall@10 0.94 on Debian labels of
#: 13 % and 0.91 on synthetic tenants of 5-10 %; with size / 16, >= 0.99 on both, scanning
#: ~70 % of what an exact scan does on the synthetic tenants; size / 32 left them at 0.94.
TREE_PATIENCE_DIVISOR = 16

#: A tenant of at most this share of the collection is searched over its own links rather
#: than the filtered global graph. Measured on Debian labels of more than 4,096 vectors
#: (median 6,506, ~11 % of the collection; bench.tenant_search --paths, load ~4): own links
#: 127 us at recall 0.988 vs the filtered global graph 294 us at 0.990 (width 64 vs 32).
#: Above half, a filtered walk wastes under half its distances and the links would
#: duplicate the global graph's memory for little: the global graph (not measured at that
#: share).
LINKS_MAX_SHARE = 0.5

#: Predicate results up to this size are scanned exactly (measured crossover with the filtered
#: graph at recall ~0.99 on Debian labels: 4-5k vectors at d 384).
SET_EXACT_MAX = 4096


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a search did: `path` ("exact", "tree", "graph" or "tenant-graph"), the number of
    vectors the filter admits (`filter_size`, an upper bound for a union of tenants), the
    collection size, the graph width (0 unless a graph ran) and the vectors whose distance
    was computed, summed over the batch (`touched`) for `queries` queries."""

    path: str
    filter_size: int
    collection_size: int
    ef: int
    touched: int
    queries: int

    @property
    def touched_per_query(self) -> float:
        return self.touched / max(self.queries, 1)


def choose(m: int, n: int, trained: bool, has_graph: bool, p: SearchParams) -> str:
    """The path for a filter admitting `m` of `n` vectors. A search asked to keep at least
    as many candidates as the filter admits (`search_ef` >= m) scans it exactly: cheaper than
    a tree or graph walk over the same vectors, and exact (a filtered graph walk may not
    reach every admitted vector)."""
    if m <= max(p.exact_search_threshold, p.search_ef) or not trained:
        return "exact"
    if has_graph and m >= GRAPH_MIN_FRACTION * n:
        return "graph"
    return "tree"


def choose_for_set(m: int, has_graph: bool, p: SearchParams) -> str:
    """The path for a predicate's (or label's) qualifying set of `m` vectors: such sets are
    spread over the tree (Debian labels: tree recall 0.83-0.95 at the default search_ef), so
    exact up to SET_EXACT_MAX (where exact and graph cost the same at recall ~0.99 on
    Debian labels), the graph above it; a temporary tree only without a graph."""
    if m <= max(p.exact_search_threshold, p.search_ef):
        return "exact"
    if not has_graph:
        return "tree"
    return "exact" if m <= SET_EXACT_MAX else "graph"


def tree_patience(m: int, p: SearchParams) -> int:
    """Non-improving vectors after which a tree search of a tenant of `m` vectors stops."""
    return max(p.search_ef, m // TREE_PATIENCE_DIVISOR)


def wants_links(index: CuratorIndex, m: int, n: int) -> bool:
    """Whether a tenant of `m` of the `n` vectors is searched over its own links (when
    built): from `tenant_graph_min` vectors up to LINKS_MAX_SHARE of the collection, where
    the graph is used at all (not with `graph_degree` 0 or the unnormalised inner product)."""
    return 0 < index.tenant_graph_min <= m <= LINKS_MAX_SHARE * n and index.graph_enabled


def graph_ef(k: int, p: SearchParams) -> int:
    return max(k, p.search_ef // 2)


def search_one(
    index: CuratorIndex, tree: TenantTree, q: np.ndarray, k: int, p: SearchParams
) -> tuple[np.ndarray, np.ndarray, Plan]:
    """Search one tenant: `search_tenants` for the common case, without the list and
    union bookkeeping (a single-query call spends ~10 µs less in the interpreter)."""
    m = tree.size
    n_all = len(index._store)
    path = choose(m, n_all, index._tree.is_trained, index.graph_enabled, p)
    if path != "exact" and wants_links(index, m, n_all):
        # The tenant's own links, if built (else queued; tree or global graph meanwhile).
        v = tree.view(index._tree)
        st = index._store
        g, over = index._tenant_graphs.fresh(tree, v, st)
        if g is not None:
            ef = graph_ef(k, p)
            ip = index.metric is not Metric.L2
            if over is None:
                s, d, n = g.search(q, k, ef, ip, st)
            else:  # written since linked: skip what it lost, scan what it gained
                s, d, n = g.search(q, k, ef, ip, st, over.dead)
                if len(over.added):
                    s2, d2, n2 = K.exact_batch(q, k, ip, over.added, st.vectors, st.vnorm)
                    s, d = K.merge_rows(np.hstack([s, s2]), np.hstack([d, d2]), k)
                    n = n + n2
            return s, d, _plan(index, "tenant-graph", m, ef, n, q)
    if path == "graph":
        return search_tenants(index, [tree], q, k, p)
    v = tree.view(index._tree)
    st = index._store
    if path == "tree":
        s, d, n = _tree(index, v, q, k, p)
    else:
        s, d, n = K.exact_batch(q, k, index.metric is not Metric.L2, v.slots, st.vectors, st.vnorm)
    return s, d, _plan(index, path, m, 0, n, q)


def search_tenants(
    index: CuratorIndex, trees: list[TenantTree], q: np.ndarray, k: int, p: SearchParams
) -> tuple[np.ndarray, np.ndarray, Plan]:
    """Search the vectors readable by any of `trees` (one tenant, or a union)."""
    m = sum(t.size for t in trees)
    path = choose(m, len(index), index.is_trained, index.graph_enabled, p)
    if path == "graph" and index.ready_graph() is None:  # being linked: the tree meanwhile
        path = choose(m, len(index), index.is_trained, False, p)
    if path == "tree":
        parts = [_tree(index, t.view(index._tree), q, k, p) for t in trees]
        if len(parts) == 1:
            s, d, n = parts[0]
        else:
            s, d = K.merge_rows(
                np.hstack([x[0] for x in parts]), np.hstack([x[1] for x in parts]), k
            )
            n = np.sum([x[2] for x in parts], axis=0)
        return s, d, _plan(index, path, m, 0, n, q)
    if path == "graph" and max(t.size for t in trees) >= len(index):
        # One of them reads everything: an unfiltered search, no need to gather slots (a
        # tenant's view is rebuilt after each of its writes: O(its size)).
        return _run(index, path, None, q, k, p, m)
    views = [t.view(index._tree).slots for t in trees]
    slots = views[0] if len(views) == 1 else np.unique(np.concatenate(views))
    return _run(index, path, slots, q, k, p, m)


def search_slots(
    index: CuratorIndex, slots: np.ndarray, q: np.ndarray, k: int, p: SearchParams
) -> tuple[np.ndarray, np.ndarray, Plan]:
    """Search among `slots` (m,) int32, unique (a predicate's result)."""
    m = len(slots)
    path = choose_for_set(m, index.graph_enabled, p) if index.is_trained else "exact"
    if path == "graph" and index.ready_graph() is None:  # being linked: the tree meanwhile
        path = choose_for_set(m, False, p)
    return _run(index, path, slots, q, k, p, m)


def _run(
    index: CuratorIndex,
    path: str,
    slots: np.ndarray | None,
    q: np.ndarray,
    k: int,
    p: SearchParams,
    m: int,
) -> tuple[np.ndarray, np.ndarray, Plan]:
    st = index._store
    ip = index.metric is not Metric.L2
    ef = 0
    if path != "graph" and slots is None:
        raise Internal(f"expected the slots to search on the {path} path")
    if path == "exact":
        s, d, n = K.exact_batch(q, k, ip, slots, st.vectors, st.vnorm)
    elif path == "graph":
        g = index._graph  # ready when planned; a later load only adds exactly-scanned slots
        if g is None:
            raise Internal("expected a graph for the graph path")
        ef = graph_ef(k, p)
        if slots is None or len(slots) >= len(st):  # everything is readable: no filter
            s, d, n = g.search(q, k, ef, st)
        else:
            allow = np.zeros(len(st.live), bool)
            allow[slots] = True
            # A filtered walk far from the filter's vectors can cost more than scanning them:
            # past that budget it gives up, and those queries are scanned exactly.
            s, d, n = g.search(q, k, ef, st, allow, slots, budget=max(len(slots), 1))
            bad = np.flatnonzero(n < 0)
            if len(bad):
                s2, d2, n2 = K.exact_batch(q[bad], k, ip, slots, st.vectors, st.vnorm)
                s[bad], d[bad] = s2, d2
                n = np.abs(n)
                n[bad] += n2
    elif slots is not None:
        temp = TenantTree()
        temp.add(index._tree, st.leaf, slots, index.config.max_sl_size)
        s, d, n = _tree(index, temp.view(index._tree), q, k, p)
    return s, d, _plan(index, path, m, ef, n, q)


def _plan(index: CuratorIndex, path: str, m: int, ef: int, n: np.ndarray, q: np.ndarray) -> Plan:
    touched = int(n[0]) if len(n) == 1 else int(n.sum())
    return Plan(path, m, len(index._store), ef, touched, len(q))


def _tree(
    index: CuratorIndex, v: TenantView, q: np.ndarray, k: int, p: SearchParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    st = index._store
    t = index._tree
    if index._crad is None:
        index._crad = t.mean_sq_radius()
    return K.tree_batch(
        q,
        k,
        p.search_ef,
        tree_patience(len(v.slots), p),
        p.beam_size,
        np.float32(p.variance_boost),
        index.metric is not Metric.L2,
        v.node,
        v.child_ptr,
        v.child,
        v.sl_ptr,
        v.slots,
        t.centroids,
        t.cnorm,
        index._crad,
        st.vectors,
        st.vnorm,
    )
