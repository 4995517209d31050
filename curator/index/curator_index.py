"""CuratorIndex: one shared clustering tree, every tenant's index a sub-tree of it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from curator.config import IndexConfig, Metric, SearchParams
from curator.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from curator.index import kernels as K
from curator.index import planner as _planner
from curator.index import snapshot as _snapshot
from curator.index.graph import ProximityGraph
from curator.index.sorted_map import SortedMap
from curator.index.tenant_tree import TenantTree
from curator.index.tree import SharedTree
from curator.index.vector_store import VectorStore
from curator.predicate import And, Label, Predicate
from curator.predicate import evaluate as _evaluate
from curator.validation import (
    as_ids,
    check_k,
    check_tenant,
    prepare_vectors,
)

__all__ = ["CuratorIndex", "TenantKey"]

#: A tenant as the index knows it: a name (standalone use) or the database's numeric tenant id.
TenantKey = str | int

log = logging.getLogger(__name__)

_LOW32 = np.int64(0xFFFFFFFF)
_DEFAULT_PARAMS = SearchParams()
_NO_SLOTS = np.empty(0, np.int32)


class CuratorIndex:
    """A multi-tenant vector index (in memory, not thread-safe: callers serialise writes).

    >>> idx = CuratorIndex(dim=4, metric="l2")
    >>> idx.insert([1, 2], np.eye(4, dtype=np.float32)[:2], owner="acme")
    >>> idx.grant([2], "globex")
    >>> ids, dist = idx.search("globex", np.eye(4, dtype=np.float32)[:1], k=2)
    >>> ids.tolist()
    [[2, -1]]

    Every vector is stored once and has an owner tenant; ids are scoped per owner (two
    owners may both use id 7), so calls that name ids take the `owner` whose ids they are
    (`owner=None`: the one owner that has each id; ambiguous ids are refused). `grant`/`revoke`
    share a vector with more tenants. Tenants are names or non-negative integer keys. A
    search for a tenant walks only that tenant's sub-tree (its shortlists), so it only ever
    returns vectors the tenant may read. Until the collection holds
    `config.train_min_vectors` vectors, the tree is a single node and every search is exact.
    Search results: ids (nq, k) int64 (-1 padded; ids >= 2**63 read back as negative int64,
    view them as uint64) and distances (nq, k) float32 (inf padded, smaller is closer).
    """

    def __init__(
        self, dim: int, metric: str | Metric = Metric.L2, config: IndexConfig | None = None
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise InvalidArgument(f"expected dim an integer in [1, 65536], got {dim!r}")
        self.dim = dim
        self.metric = Metric.parse(metric)
        self.config = config or IndexConfig()
        self._store = VectorStore(dim)
        self._owned: list[SortedMap | None] = []  # per tenant: client id (int64 bits) -> slot
        self._access = SortedMap(values=False)  # slot << 32 | tenant
        self._tenant_of: dict[TenantKey, int] = {}
        self._names: list[TenantKey | None] = []
        self._trees: list[TenantTree | None] = []
        self._free: list[int] = []  # tenant numbers free for reuse (O(1) tenant creation)
        self._tree = SharedTree.untrained(dim)
        self._trained_n = 0
        self._crad: np.ndarray | None = None
        self._defer_training = 0
        self._graph: ProximityGraph | None = None  # built when first needed (build_graph)
        self._sorted: dict[int, tuple[Any, np.ndarray]] = {}  # id(TenantTree) -> (view, slots)
        # Searches share the index (the Database's read lock); what a search may build lazily
        # (the graph, sorted slot caches) is built under this lock.
        self._lazy = threading.Lock()
        # Train inline when a write crosses a threshold. The Database turns this off and
        # trains in the background instead (curator/storage/trainer.py).
        self.auto_train = True

    # -- introspection ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._store)

    @property
    def is_trained(self) -> bool:
        return self._tree.is_trained

    def tenants(self) -> list[TenantKey]:
        return sorted(self._tenant_of, key=lambda k: (isinstance(k, str), k))

    def has_tenant(self, tenant: TenantKey) -> bool:
        return tenant in self._tenant_of

    def tenant_size(self, tenant: TenantKey) -> int:
        return self._tenant_tree(tenant).size

    def owned_count(self, tenant: TenantKey) -> int:
        t = self._tenant_of.get(tenant)
        m = self._owned[t] if t is not None else None
        return len(m) if m is not None else 0

    def readable_ids(self, tenant: TenantKey) -> np.ndarray:
        """Ids the tenant may read (owned or granted), sorted (n,) uint64."""
        slots = self._tenant_tree(tenant).slots()
        return np.sort(self._store.ext_id[slots])

    def owned_ids(self, tenant: TenantKey) -> np.ndarray:
        """Ids the tenant owns, sorted (n,) uint64."""
        t = self._tenant_of.get(tenant)
        m = self._owned[t] if t is not None else None
        if m is None:
            return np.empty(0, np.uint64)
        return np.sort(m.items()[0].view(np.uint64))

    def received(self, tenant: TenantKey) -> list[tuple[TenantKey, np.ndarray]]:
        """The shares `tenant` received: (owner, ids (n,) uint64) per owner."""
        t = self._tenant_of.get(tenant)
        if t is None:
            return []
        slots = self._live_tree(t).slots()
        owners = self._store.owner[slots]
        slots, owners = slots[owners != t], owners[owners != t]
        out = []
        for o in np.unique(owners).tolist():
            key = self._names[o]
            if key is not None:
                out.append((key, np.sort(self._store.ext_id[slots[owners == o]])))
        return out

    def owner_of(self, ids: Any, owner: TenantKey | None = None) -> list[TenantKey]:
        slots = self._slots_of(as_ids(ids, unique=False), owner)
        return [self._names[t] or "" for t in self._store.owner[slots].tolist()]

    def get_vectors(self, ids: Any, owner: TenantKey | None = None) -> np.ndarray:
        """Stored vectors of `ids` (n, d) float32 (normalised for cosine); NotFound if absent."""
        return self._store.vectors[self._slots_of(as_ids(ids, unique=False), owner)].copy()

    def contains(self, ids: Any, owner: TenantKey | None = None) -> np.ndarray:
        """(n,) bool: which ids exist (of `owner`, or of any owner)."""
        return self._lookup(as_ids(ids, unique=False), owner) >= 0

    def can_read(self, ids: Any, owner: TenantKey, tenant: TenantKey) -> np.ndarray:
        """(n,) bool: which of `owner`'s ids exist and `tenant` may read (O(log n) each)."""
        slots = self._lookup(as_ids(ids, unique=False), owner)
        t = self._tenant_of.get(tenant)
        out = np.zeros(len(slots), bool)
        if t is None:
            return out
        found = slots >= 0
        out[found] = self._access.contains(_pair(slots[found], t))
        return out

    # -- writes -----------------------------------------------------------------------------
    def add_tenant(self, tenant: TenantKey) -> None:
        self._ensure_tenant(_check_key(tenant))

    def insert(self, ids: Any, vectors: Any, owner: TenantKey) -> None:
        """Insert (n,) ids with (n, d) vectors owned by `owner`. An id the owner already has is
        replaced entirely (its old grants are dropped). All or nothing: bad input changes
        nothing."""
        ids = as_ids(ids)
        x = self._prepare(vectors, "vectors")
        if len(ids) != len(x):
            raise InvalidArgument(
                f"expected one vector per id, got {len(ids)} ids and {len(x)} vectors"
            )
        self.insert_prepared(ids, x, _check_key(owner))

    def insert_prepared(self, ids: np.ndarray, x: np.ndarray, owner: TenantKey) -> None:
        """`insert` of input already checked at the edge: unique (n,) uint64 ids and (n, d)
        float32 rows as `prepare_vectors` returns them (unit length for cosine)."""
        if not len(ids):
            return
        t = self._ensure_tenant(owner)
        owned = self._owned[t]
        if owned is None:
            owned = self._owned[t] = SortedMap()
        old = owned.get(ids.view(np.int64))
        if (old >= 0).any():
            self._delete_slots(old[old >= 0])
        slots = self._store.allocate(len(ids))
        leaves = self._tree.route(x)
        self._store.put(slots, ids, x, t, leaves)
        if self._graph is not None:  # graph hook: new slots are searchable (fresh) at once
            self._graph.add(slots, self._store)
        self._tree.update_radius(x, leaves)
        self._crad = None
        owned.put(ids.view(np.int64), slots)
        self._access.put(_pair(slots, t))
        self._live_tree(t).add(
            self._tree,
            self._store.leaf,
            slots,
            self.config.max_sl_size,
        )
        self._maybe_train()

    def grant(self, ids: Any, tenant: TenantKey, owner: TenantKey | None = None) -> int:
        """Let `tenant` read `owner`'s `ids` (tenant created if new); returns how many grants
        were new."""
        slots = self._slots_of(as_ids(ids, unique=False), owner)
        t = self._ensure_tenant(_check_key(tenant))
        slots = np.unique(slots)
        new = self._access.add(_pair(slots, t))
        self._live_tree(t).add(
            self._tree,
            self._store.leaf,
            slots[new],
            self.config.max_sl_size,
        )
        return int(new.sum())

    def revoke(self, ids: Any, tenant: TenantKey, owner: TenantKey | None = None) -> int:
        """Take `tenant`'s access to `owner`'s `ids` away; returns how many grants existed. The
        owner's own access cannot be revoked (delete the vector instead)."""
        tree = self._tenant_tree(tenant)
        t = self._tenant_of[tenant]
        slots = np.unique(self._slots_of(as_ids(ids, unique=False), owner))
        if (self._store.owner[slots] == t).any():
            raise FailedPrecondition(
                f"expected ids not owned by {tenant!r}: an owner's access "
                "cannot be revoked, delete the vector instead"
            )
        keys = _pair(slots, t)
        have = self._access.contains(keys)
        self._access.remove(keys[have])
        tree.remove(self._tree, self._store.leaf, slots[have], self.config.max_sl_size)
        return int(have.sum())

    def delete(self, ids: Any, owner: TenantKey | None = None) -> int:
        """Delete `owner`'s vectors by id (`owner=None`: every owner's), for every tenant that
        reads them; unknown ids are ignored. Returns the count."""
        ids = as_ids(ids, unique=False)
        if owner is None:
            slots = np.concatenate(
                [np.empty(0, np.int64)]
                + [m.get(ids.view(np.int64)) for m in self._owned if m is not None]
            )
        else:
            slots = self._lookup(ids, owner)
        slots = np.unique(slots[slots >= 0]).astype(np.int32)
        self._delete_slots(slots)
        return len(slots)

    def drop_tenant(self, tenant: TenantKey) -> None:
        """Remove a tenant: the vectors it owns are deleted (for every tenant), and its
        grants on other tenants' vectors are revoked."""
        tree = self._tenant_tree(tenant)
        t = self._tenant_of[tenant]
        owned = np.flatnonzero(self._store.owner[: self._store.high] == t).astype(np.int32)
        self._delete_slots(owned)
        rest = tree.slots()
        self._access.remove(_pair(rest, t))
        self._sorted.pop(id(tree), None)  # predicate hook: drop the tenant's sorted slots
        self._trees[t] = None
        self._owned[t] = None
        self._names[t] = None
        self._free.append(t)
        del self._tenant_of[tenant]

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
        trees = [self._tenant_tree(n) for n in names]
        if where is None:
            slots, dist, plan = _planner.search_tenants(self, trees, q, k, p)
        else:
            views = [self._sorted_slots(t) for t in trees]
            readable = views[0] if len(views) == 1 else np.unique(np.concatenate(views))
            allowed = _evaluate(where, readable, self._label_slots)
            slots, dist, plan = _planner.search_slots(self, allowed, q, k, p)
        ids, out, hit_slots = self._finish(slots, dist)
        return ids, out, hit_slots, plan

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
        """The proximity graph, linking every live vector the first time (seconds per 10^4
        vectors: the planner calls this on the first search that needs it; call it after a
        bulk load to pay that up front). None if the graph is disabled or untrained."""
        cfg = self.config
        if self._graph is None and self.graph_enabled:
            with self._lazy:  # concurrent searches: one builds, the others wait for it
                if self._graph is None:
                    log.info("linking %d vectors into the proximity graph", len(self._store))
                    self._graph = ProximityGraph.build(
                        self._store,
                        self.metric is not Metric.L2,
                        cfg.graph_degree,
                        cfg.graph_ef_construction,
                    )
        return self._graph

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
        found = slots >= 0
        t = np.where(found, self._store.owner[np.maximum(slots, 0)], -1)
        uniq, inv = np.unique(t[found], return_inverse=True)
        index = np.full(slots.shape, -1, np.int64)
        index[found] = inv
        return [self._names[u] for u in uniq.tolist()], index

    def hit_vectors(self, slots: np.ndarray) -> np.ndarray:
        """Stored vectors of search hits (slots (nq, k), -1 padded) as (nq, k, d) float32,
        zeros for padding."""
        out = np.zeros((*slots.shape, self.dim), np.float32)
        found = slots >= 0
        out[found] = self._store.vectors[slots[found]]
        return out

    # -- accounting and checks ----------------------------------------------------------------
    def memory_usage(self) -> dict[str, int]:
        """Bytes held, by component; "total" is their sum."""
        trees = [t for t in self._trees if t is not None]
        parts = {
            "vectors": self._store.nbytes,
            "tree": self._tree.nbytes,
            "shortlists": sum(t.nbytes for t in trees),
            "access_lists": self._access.nbytes,
            "id_map": sum(m.nbytes for m in self._owned if m is not None),
            "tenants": 100 * len(self._tenant_of) + 16 * len(self._trees),
            "graph": self._graph.nbytes if self._graph is not None else 0,
            "sorted_slots": sum(v[1].nbytes for v in list(self._sorted.values())),
        }
        parts["total"] = sum(parts.values())
        return parts

    def snapshot(self) -> dict[str, np.ndarray]:
        """The whole index state as named numpy arrays (see curator.snapshot)."""
        return _snapshot.to_arrays(self)

    @classmethod
    def from_snapshot(cls, arrays: dict[str, np.ndarray]) -> CuratorIndex:
        return _snapshot.from_arrays(arrays)

    def save(self, path: str | os.PathLike[str]) -> None:
        _snapshot.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CuratorIndex:
        return _snapshot.load(path)

    def check_invariants(self) -> None:
        """Raise curator.errors.Internal if the index structures disagree with each other."""
        live = self._store.live_slots()
        n_ids = sum(len(m) for m in self._owned if m is not None)
        if len(live) != n_ids or len(live) != len(self._store):
            raise Internal(f"expected {len(live)} ids, id maps have {n_ids}")
        keys, _ = self._access.items()
        pairs = set(zip((keys >> 32).tolist(), (keys & _LOW32).tolist(), strict=True))
        seen = set()
        for t, tree in enumerate(self._trees):
            if tree is None:
                continue
            tree.check(self._tree, self._store.leaf, self.config.max_sl_size)
            for s in tree.slots().tolist():
                if (s, t) in seen or (s, t) not in pairs or not self._store.live[s]:
                    raise Internal(f"slot {s} of tenant {t} is duplicated, unknown or dead")
                seen.add((s, t))
        if seen != pairs:
            raise Internal(f"{len(pairs - seen)} access pairs are in no shortlist")
        owners = set(zip(live.tolist(), self._store.owner[live].tolist(), strict=True))
        if not owners <= pairs:
            raise Internal("an owner lacks access to its own vector")
        if self._graph is not None:  # graph hook
            self._graph.check(self._store)

    # -- internals ----------------------------------------------------------------------------
    def prepare(self, x: Any, what: str = "queries") -> np.ndarray:
        """(n, d) float32 copy of the input, checked once (finite, bounded norm, non-zero for
        cosine) and unit length for cosine: what `insert_prepared`/`search_prepared` take."""
        return prepare_vectors(x, self.dim, self.metric is Metric.COSINE, what)

    _prepare = prepare

    def _tenant_tree(self, tenant: TenantKey) -> TenantTree:
        t = self._tenant_of.get(tenant)
        if t is None:
            raise NotFound(f"expected a known tenant, got {tenant!r}")
        return self._live_tree(t)

    def _live_tree(self, t: int) -> TenantTree:
        tree = self._trees[t]
        if tree is None:
            raise Internal(f"tenant slot {t} is free")
        return tree

    def _ensure_tenant(self, tenant: TenantKey) -> int:
        t = self._tenant_of.get(tenant)
        if t is None:
            if self._free:
                t = self._free.pop()
            else:
                t = len(self._names)
                self._names.append(None)
                self._trees.append(None)
                self._owned.append(None)
            self._names[t] = tenant
            self._trees[t] = TenantTree()
            self._tenant_of[tenant] = t
        return t

    def _lookup(self, ids: np.ndarray, owner: TenantKey | None) -> np.ndarray:
        """Slots of ids (n,) int64, -1 where absent; `owner=None` searches every owner and
        refuses an id that several owners have."""
        keys = ids.view(np.int64)
        if owner is not None:
            t = self._tenant_of.get(owner)
            m = self._owned[t] if t is not None else None
            return m.get(keys) if m is not None else np.full(len(ids), -1, np.int64)
        out = np.full(len(ids), -1, np.int64)
        for m in self._owned:
            if m is None:
                continue
            got = m.get(keys)
            hit = got >= 0
            if (hit & (out >= 0)).any():
                dup = int(ids[np.flatnonzero(hit & (out >= 0))[0]])
                raise InvalidArgument(
                    f"expected ids of one owner, got id {dup} that several owners have: "
                    "name the owner"
                )
            out[hit] = got[hit]
        return out

    def _slots_of(self, ids: np.ndarray, owner: TenantKey | None = None) -> np.ndarray:
        slots = self._lookup(ids, owner)
        if (slots < 0).any():
            raise NotFound(
                f"expected known vector ids, got unknown id "
                f"{int(ids[np.flatnonzero(slots < 0)[0]])}"
            )
        return slots.astype(np.int32)

    def _rebuild_owned(self) -> None:
        """Per-owner id maps from the vector store (after a re-layout or a snapshot load)."""
        st = self._store
        live = st.live_slots()
        owners = st.owner[live]
        ext = st.ext_id[live].view(np.int64)
        order = np.lexsort((ext, owners))
        live, owners, ext = live[order], owners[order], ext[order]
        self._owned = [None] * len(self._names)
        bounds = np.flatnonzero(np.diff(owners)) + 1
        for part in np.split(np.arange(len(live)), bounds) if len(live) else []:
            t = int(owners[part[0]])
            self._owned[t] = SortedMap.from_sorted(ext[part], live[part])

    def _delete_slots(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        slots = np.sort(np.asarray(slots, np.int32))
        keys, _ = self._access.range(_pair(slots, 0), _pair(slots + 1, 0))
        s_of, t_of = (keys >> 32).astype(np.int32), (keys & _LOW32).astype(np.int32)
        for t in np.unique(t_of).tolist():
            self._live_tree(t).remove(
                self._tree,
                self._store.leaf,
                s_of[t_of == t],
                self.config.max_sl_size,
            )
        self._access.remove(keys)
        st = self._store
        if self._graph is not None:  # graph hook: before release() clears the rows
            self._graph.remove(slots, st)
        self._tree.update_radius(st.vectors[slots], st.leaf[slots], sign=-1)
        self._crad = None
        owners = st.owner[slots]
        for t in np.unique(owners).tolist():
            m = self._owned[t]
            if m is not None:
                m.remove(st.ext_id[slots[owners == t]].view(np.int64))
        st.release(slots)

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


def _check_key(key: Any) -> TenantKey:
    if isinstance(key, int | np.integer) and not isinstance(key, bool) and key >= 0:
        return int(key)
    return check_tenant(key)


def _check_keys(keys: Any) -> list[TenantKey]:
    if isinstance(keys, str | int | np.integer):
        return [_check_key(keys)]
    out = [_check_key(k) for k in keys]
    if not out:
        raise InvalidArgument("expected at least one tenant, got none")
    return out


def _pair(slots: np.ndarray, tenant: int) -> np.ndarray:
    return (np.asarray(slots, np.int64) << 32) | np.int64(tenant)
