"""Training of a CuratorIndex (a mixin): the shared tree trained (or retrained) on the
vectors, every tenant's sub-tree re-homed on it, and the proximity graph built or kept
across re-layouts; deferred while a bulk load runs."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from curator.config import Metric
from curator.index.graph import ProximityGraph
from curator.index.index_base import (
    _LOW32,
    IndexState,
    _pair,
)
from curator.index.sorted_map import SortedMap
from curator.index.tenant_tree import TenantTree
from curator.index.tree import SharedTree
from curator.index.vector_store import VectorStore

__all__ = ["IndexTraining"]

log = logging.getLogger("curator.index.curator_index")


class IndexTraining(IndexState):
    def train(self) -> None:
        """(Re)build the shared tree from the stored vectors and re-encode every tenant."""
        live = self._store.live_slots()
        if len(live) < 2:
            return
        cfg = self.config
        x = self._store.vectors[live]
        sample_n = min(
            len(live),
            max(cfg.branching * cfg.kmeans_max_points_per_centroid * 8, cfg.max_leaf_size * 64),
        )
        if sample_n < len(live):
            # Train on a sample; scale the leaf size so leaves hold ~max_leaf_size vectors.
            rng = np.random.default_rng(cfg.seed)
            sample = x[np.sort(rng.choice(len(live), sample_n, replace=False))]
            leaf = max(1, round(cfg.max_leaf_size * sample_n / len(live)))
            tree = SharedTree.train(sample, dataclasses.replace(cfg, max_leaf_size=leaf))
        else:
            tree = SharedTree.train(x, cfg)
        leaves = tree.route(x)
        tree.update_radius(x, leaves)
        self._tree = tree
        self._crad = None
        # Lay the vectors out by leaf, then owner (compacting freed rows), so that a shortlist
        # reads memory in runs; then re-encode the tenants.
        order = np.lexsort((live, self._store.owner[live], leaves))
        new_slot = np.full(self._store.high + 1, -1, np.int64)
        new_slot[live[order]] = np.arange(len(live))
        self._store.leaf[live] = leaves
        old_store = self._store
        self._store = self._store.reordered(live[order])
        self._graph_after_relayout(live[order], new_slot, old_store)
        self._rebuild_owned()
        keys, _ = self._access.items()
        slot_of = new_slot[keys >> 32].astype(np.int32)
        tenant_of = (keys & _LOW32).astype(np.int32)
        new_keys = _pair(slot_of, 0) | tenant_of
        self._access = SortedMap.from_sorted(np.sort(new_keys))
        order = np.argsort(tenant_of, kind="stable")
        slot_of, tenant_of = slot_of[order], tenant_of[order]
        bounds = np.flatnonzero(np.diff(tenant_of)) + 1
        starts = np.r_[0, bounds]
        groups = zip(tenant_of[starts].tolist(), np.split(slot_of, bounds), strict=True)
        for t in range(len(self._trees)):
            if self._trees[t] is not None:
                self._trees[t] = TenantTree()
        for t, slots in tqdm(
            groups,
            total=len(starts),
            desc="encoding tenants",
            unit="tenant",
            disable=None,
            leave=False,
        ):
            self._live_tree(t).add(
                tree,
                self._store.leaf,
                slots,
                cfg.max_sl_size,
            )
        self._trained_n = len(live)

    def _graph_after_relayout(
        self, order: np.ndarray, new_slot: np.ndarray, old_store: VectorStore
    ) -> None:
        """Graph hook of train(): the graph follows the new slot layout."""
        if self._graph is not None:
            self._graph.relayout(order, new_slot, old_store, self._store)

    @property
    def graph_enabled(self) -> bool:
        """Whether the planner may use the graph: trained, `config.graph_degree` > 0, and not
        the unnormalised inner product (not a metric: greedy graph search on it measured
        recall@10 0.94 at defaults in tests/test_index_search.py, where the tree reaches 0.95)."""
        return (
            self._tree.is_trained and self.config.graph_degree > 0 and self.metric is not Metric.IP
        )

    def build_graph(self) -> ProximityGraph | None:
        """The proximity graph with every live vector linked, linking them now in the calling
        thread (seconds per 10^4 vectors: call it after a bulk load to pay that up front).
        None if the graph is disabled or untrained."""
        g = self._graph
        if g is None and self.graph_enabled:
            with self._lazy:
                if self._graph is None:
                    log.info("linking %d vectors into the proximity graph", len(self._store))
                    self._graph = ProximityGraph(
                        self.metric is not Metric.L2,
                        self.config.graph_degree,
                        self.config.graph_ef_construction,
                        capacity=len(self._store.live),
                    )
                    self._graph.add(self._store.live_slots(), self._store, background=False)
                g = self._graph
        if g is not None:
            g.link_pending(self._store)
        return g

    def ready_graph(self) -> ProximityGraph | None:
        """The graph if it can serve a search now, else None (the planner takes the tree).
        The first call on a graph-enabled index starts linking every vector in the
        background (`ProximityGraph.start`): no search or write waits for the build."""
        g = self._graph
        if g is None:
            if not self.graph_enabled:
                return None
            with self._lazy:
                if self._graph is None:
                    log.info("linking %d vectors in the background", len(self._store))
                    self._graph = ProximityGraph.start(
                        self._store,
                        self.metric is not Metric.L2,
                        self.config.graph_degree,
                        self.config.graph_ef_construction,
                    )
            return None
        return None if g.building else g

    @contextlib.contextmanager
    def deferred_training(self) -> Iterator[None]:
        """Suspend automatic (re)training during a bulk load; train once at the end if the
        collection crossed a threshold meanwhile."""
        self._defer_training += 1
        try:
            yield
        finally:
            self._defer_training -= 1
            self._maybe_train()

    def wants_training(self) -> bool:
        """The collection crossed `train_min_vectors` untrained, or grew `retrain_growth`
        times since it was trained."""
        n = len(self._store)
        cfg = self.config
        if not self._tree.is_trained:
            return n >= cfg.train_min_vectors
        return bool(cfg.retrain_growth) and n >= cfg.retrain_growth * self._trained_n

    def _maybe_train(self) -> None:
        if self._defer_training or not self.auto_train or not self.wants_training():
            return
        log.info("collection of %d vectors: training the shared tree", len(self._store))
        self.train()
