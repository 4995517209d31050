"""Searches of a CuratorIndex (a mixin): per tenant, over several tenants, by label
predicates, the AND of two labels; hits turned into ids, owners and vectors. The path (exact,
tree or graph) is the planner's (planner.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from curator.config import Metric, SearchParams
from curator.errors import InvalidArgument
from curator.index import kernels as K
from curator.index import planner as _planner
from curator.index.index_base import (
    _DEFAULT_PARAMS,
    _NO_SLOTS,
    IndexState,
    TenantKey,
    _check_keys,
)
from curator.index.tenant_tree import TenantTree
from curator.predicate import And, Label, Predicate
from curator.predicate import evaluate as _evaluate
from curator.validation import (
    check_k,
)

if TYPE_CHECKING:
    from curator.index.curator_index import CuratorIndex

__all__ = ["IndexSearch"]


class IndexSearch(IndexState):
    # -- search -----------------------------------------------------------------------------
    def search(
        self,
        tenant: TenantKey | Sequence[TenantKey],
        queries: Any,
        k: int = 10,
        params: SearchParams | None = None,
        *,
        where: Predicate | None = None,
        explain: bool = False,
    ) -> Any:
        """Nearest `k` vectors readable by `tenant` (or by any of several tenants) for each
        row of `queries` (nq, d), restricted to those satisfying `where` (a label predicate,
        see curator.predicate) if given. Returns ids (nq, k) int64 and distances (nq, k)
        float32; with `explain=True` also the `Plan` that ran (path, vectors touched)."""
        ids, out, _, plan = self.search_prepared(
            _check_keys(tenant), self._prepare(queries), k, params, where
        )
        return (ids, out, plan) if explain else (ids, out)

    def search_prepared(
        self,
        names: Sequence[TenantKey],
        q: np.ndarray,
        k: int = 10,
        params: SearchParams | None = None,
        where: Predicate | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """`search` over checked input (`prepare_vectors` rows, known tenant keys); returns
        ids, distances, each hit's slot (nq, k) int32 (-1 padded; see `hit_owners`,
        `hit_vectors`) and the Plan that ran."""
        k = check_k(k)
        p = params or _DEFAULT_PARAMS
        if where is None and len(names) == 1:
            tree = self._tenant_tree(names[0])
            slots, dist, plan = _planner.search_one(_whole(self), tree, q, k, p)
            ids, out, hit_slots = self._finish(slots, dist)
            return ids, out, hit_slots, plan
        trees = [self._tenant_tree(n) for n in names]
        if where is None:
            slots, dist, plan = _planner.search_tenants(_whole(self), trees, q, k, p)
        else:
            views = [self._sorted_slots(t) for t in trees]
            readable = views[0] if len(views) == 1 else np.unique(np.concatenate(views))
            allowed = _evaluate(where, readable, self._label_slots)
            slots, dist, plan = _planner.search_slots(_whole(self), allowed, q, k, p)
        ids, out, hit_slots = self._finish(slots, dist)
        return ids, out, hit_slots, plan

    def link_tenants(self) -> int:
        """Build now (in this thread) the links of every tenant the planner would search
        over its own links (`planner.wants_links`: from `tenant_graph_min` vectors up to half
        the collection) whose links are missing or unusable (searches otherwise queue them in
        the background): for benchmarks and bulk loads. Returns how many were built."""
        if not self.tenant_graph_min or not _whole(self).graph_enabled:
            return 0
        built = 0
        for tree in self._trees:
            if tree is not None and _planner.wants_links(_whole(self), tree.size, len(self)):
                v = tree.view(self._tree)
                if self._tenant_graphs.fresh(tree, v, self._store, enqueue=False)[0] is None:
                    self._tenant_graphs.build_now(tree, v, self._store)
                    built += 1
        return built

    def tenant_key(self, t: int) -> TenantKey | None:
        """The key of internal tenant number `t` (as returned in owners), None if free."""
        return self._names[t] if 0 <= t < len(self._names) else None

    def search_and(
        self,
        tenants: tuple[TenantKey, TenantKey],
        queries: Any,
        k: int = 10,
        params: SearchParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest `k` vectors readable by both tenants (labels): the filter track's AND."""
        ids, dist, _, _ = self.search_and_prepared(
            tuple(_check_keys(tenants)), self._prepare(queries), k, params
        )
        return ids, dist

    def search_and_prepared(
        self,
        tenants: Sequence[TenantKey],
        q: np.ndarray,
        k: int = 10,
        params: SearchParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        """Vectors readable by both tenants (labels): the AND predicate, planned."""
        if len(tenants) != 2:
            raise InvalidArgument(f"expected 2 tenants for an AND, got {len(tenants)}")
        a, b = tenants
        return self.search_prepared([a], q, k, params, where=And(Label(a), Label(b)))

    def _label_slots(self, name: TenantKey) -> np.ndarray:
        t = self._tenant_of.get(name)  # a label nothing was granted to selects nothing
        return _NO_SLOTS if t is None else self._sorted_slots(self._live_tree(t))

    def _sorted_slots(self, tree: TenantTree) -> np.ndarray:
        """A tenant's slots sorted (n,) int32, cached while its view is unchanged (predicate
        evaluation merges sorted arrays; sorting a 20k-slot label per query cost ~1 ms)."""
        view = tree.view(self._tree)
        hit = self._sorted.get(id(tree))
        if hit is None or hit[0] is not view:
            hit = (view, np.sort(view.slots))
            self._sorted[id(tree)] = hit
        return hit[1]

    def _finish(
        self, slots: np.ndarray, dist: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shift = np.float32(1.0 if self.metric is Metric.COSINE else 0.0)
        ids, out = K.finish(slots, dist, self._store.ext_id, shift, self.metric is Metric.L2)
        return ids, out, slots

    def hit_owners(self, slots: np.ndarray) -> tuple[list[TenantKey | None], np.ndarray]:
        """Owners of search hits given as slots (as `search_prepared` returns them, -1
        padded): (the distinct owner keys, and for each hit the index into them, -1 for
        padding). Work is per distinct owner, not per hit."""
        uniq, index = K.group_owners(slots, self._store.owner)
        return [self._names[u] for u in uniq.tolist()], index

    def hit_vectors(self, slots: np.ndarray) -> np.ndarray:
        """Stored vectors of search hits (slots (nq, k), -1 padded) as (nq, k, d) float32,
        zeros for padding."""
        out = np.zeros((*slots.shape, self.dim), np.float32)
        found = slots >= 0
        out[found] = self._store.vectors[slots[found]]
        return out


def _whole(part: IndexSearch) -> CuratorIndex:
    """The CuratorIndex this mixin is part of (what the planner takes)."""
    return cast("CuratorIndex", part)
