"""CuratorIndex: one shared clustering tree, every tenant's index a sub-tree of it."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

from curator.config import IndexConfig, Metric
from curator.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from curator.index import snapshot as _snapshot
from curator.index import tenant_graph as _tg
from curator.index.graph import ProximityGraph
from curator.index.index_base import (
    _LOW32,
    _NO_SLOTS,
    TenantKey,
    _check_key,
    _check_keys,
    _pair,
    _pairs,
)
from curator.index.index_search import IndexSearch
from curator.index.index_training import IndexTraining
from curator.index.sorted_map import SortedMap
from curator.index.tenant_graph import TenantGraphs
from curator.index.tenant_tree import TenantTree
from curator.index.tree import SharedTree
from curator.index.vector_store import VectorStore
from curator.validation import (
    as_ids,
)

__all__ = ["CuratorIndex", "TenantKey"]


log = logging.getLogger(__name__)


class CuratorIndex(IndexSearch, IndexTraining):
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
        # Links of large tenants, a search-side cache of their views (tenant_graph.py);
        # tenant_graph_min = 0 turns them off (the tree serves those tenants).
        self._tenant_graphs = TenantGraphs(self.metric is not Metric.L2)
        self.tenant_graph_min = _tg.MIN_SIZE
        self._sorted: dict[int, tuple[Any, np.ndarray]] = {}  # id(TenantTree) -> (view, slots)
        # Searches share the index (the Database's read lock); what a search may build lazily
        # (the graph, sorted slot caches) is built under this lock.
        self._lazy = threading.Lock()
        # Train inline when a write crosses a threshold. The Database turns this off and
        # trains in the background instead (curator/storage/trainer.py).
        self.auto_train = True

    # -- introspection ----------------------------------------------------------------------

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

    def insert(self, ids: Any, vectors: Any, owner: TenantKey, readers: Any = ()) -> None:
        """Insert (n,) ids with (n, d) vectors owned by `owner`, readable also by `readers`
        (tenants, created if new: `grant` in the same call). An id the owner already has is
        replaced entirely (its old grants are dropped). All or nothing: bad input changes
        nothing."""
        ids = as_ids(ids)
        x = self._prepare(vectors, "vectors")
        if len(ids) != len(x):
            raise InvalidArgument(
                f"expected one vector per id, got {len(ids)} ids and {len(x)} vectors"
            )
        readers = _check_keys(() if readers is None else readers, empty_ok=True)
        self.insert_prepared(ids, x, _check_key(owner), readers)

    def insert_prepared(
        self, ids: np.ndarray, x: np.ndarray, owner: TenantKey, readers: Any = ()
    ) -> None:
        """`insert` of input already checked at the edge: unique (n,) uint64 ids and (n, d)
        float32 rows as `prepare_vectors` returns them (unit length for cosine), and checked
        tenant keys as `readers`."""
        n = len(ids)
        if not n:
            return
        t = self._ensure_tenant(owner)
        owned = self._owned[t]
        if owned is None:
            owned = self._owned[t] = SortedMap()
        slots = self._store.allocate(n)
        old = owned.swap(ids.view(np.int64), slots)  # the ids now name the new slots
        if n == 1:
            if old[0] >= 0:
                self._delete_slots(old.astype(np.int32), keep_ids=True)
        elif (old >= 0).any():
            self._delete_slots(old[old >= 0], keep_ids=True)
        if n == 1:  # routed, counted and stored in one compiled call
            self._store.put_routed(int(slots[0]), int(ids[0]), x[0], t, self._tree)
        else:
            leaves = self._tree.route(x)
            self._store.put(slots, ids, x, t, leaves)
            self._tree.update_radius(x, leaves)
        if self._graph is not None:  # graph hook: new slots are searchable (fresh) at once
            self._graph.add(slots, self._store)
        self._crad = None
        tenants = [t]
        for r in readers:
            tr = self._ensure_tenant(r)
            if tr not in tenants:
                tenants.append(tr)
        self._access.put(_pairs(slots, tenants))
        for tt in tenants:
            self._live_tree(tt).add(self._tree, self._store.leaf, slots, self.config.max_sl_size)
        self._maybe_train()

    def grant(self, ids: Any, tenant: TenantKey, owner: TenantKey | None = None) -> int:
        """Let `tenant` read `owner`'s `ids` (tenant created if new); returns how many grants
        were new."""
        slots = self._slots_of(as_ids(ids, unique=False), owner)
        t = self._ensure_tenant(_check_key(tenant))
        if len(slots) > 1:
            slots = np.unique(slots)
        new = self._access.add(_pairs(slots, [t]))
        if len(slots) == 1:  # the one-id write: no masks
            if not new[0]:
                return 0
            self._live_tree(t).add(self._tree, self._store.leaf, slots, self.config.max_sl_size)
            return 1
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
        slots = self._slots_of(as_ids(ids, unique=False), owner)
        if len(slots) > 1:
            slots = np.unique(slots)
        if (self._store.owner[slots] == t).any():
            raise FailedPrecondition(
                f"expected ids not owned by {tenant!r}: an owner's access "
                "cannot be revoked, delete the vector instead"
            )
        keys = _pairs(slots, [t])
        if len(slots) == 1:  # the one-id write: remove() says whether the grant existed
            if not self._access.remove(keys):
                return 0
            tree.remove(self._tree, self._store.leaf, slots, self.config.max_sl_size)
            return 1
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
        if len(slots) == 1:
            slots = slots.astype(np.int32) if slots[0] >= 0 else _NO_SLOTS
        else:
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
            "tenant_graphs": self._tenant_graphs.nbytes,
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
        if len(slots) == 1 and slots[0] >= 0:
            return slots.astype(np.int32)
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

    def _delete_slots(self, slots: np.ndarray, keep_ids: bool = False) -> None:
        """Delete vectors by slot for every tenant; `keep_ids`: their ids were already
        mapped to new slots (an upsert), the owners' id maps are left alone."""
        if not len(slots):
            return
        slots = np.asarray(slots, np.int32)
        one = len(slots) == 1  # the one-id write: its few access pairs as Python ints
        if not one:
            slots = np.sort(slots)
        keys, _ = self._access.range(_pairs(slots, [0]), _pairs(slots + 1, [0]))
        t_of = keys & _LOW32
        s_of = slots if one else (keys >> 32).astype(np.int32)
        for t in t_of.tolist() if one else np.unique(t_of).tolist():
            self._live_tree(t).remove(
                self._tree,
                self._store.leaf,
                s_of if one else s_of[t_of == t],
                self.config.max_sl_size,
            )
        self._access.remove(keys)
        st = self._store
        if self._graph is not None:  # graph hook: before release() clears the rows
            self._graph.remove(slots, st)
        rows = slice(int(slots[0]), int(slots[0]) + 1) if one else slots  # (a view: no copy)
        self._tree.update_radius(st.vectors[rows], st.leaf[rows], sign=-1)
        self._crad = None
        owners = st.owner[rows]
        for t in [] if keep_ids else owners.tolist() if one else np.unique(owners).tolist():
            m = self._owned[t]
            if m is not None:
                m.remove(st.ext_id[rows if one else slots[owners == t]].view(np.int64))
        st.release(slots)
