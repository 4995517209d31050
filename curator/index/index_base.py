"""What CuratorIndex (curator_index.py) and its mixins (index_search.py, index_training.py)
share: the index's state as __init__ sets it up, the helpers every part uses, and the small
key and id helpers."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from curator.config import IndexConfig, Metric, SearchParams
from curator.errors import Internal, InvalidArgument, NotFound
from curator.index.graph import ProximityGraph
from curator.index.sorted_map import SortedMap
from curator.index.tenant_graph import TenantGraphs
from curator.index.tenant_tree import TenantTree
from curator.index.tree import SharedTree
from curator.index.vector_store import VectorStore
from curator.validation import (
    check_tenant,
    name_ok,
    prepare_vectors,
)

__all__ = ["IndexState", "TenantKey"]

#: A tenant as the index knows it: a name (standalone use) or the database's numeric tenant id.
TenantKey = str | int

_LOW32 = np.int64(0xFFFFFFFF)
_DEFAULT_PARAMS = SearchParams()
_NO_SLOTS = np.empty(0, np.int32)


class IndexState:
    """CuratorIndex's state (set in its __init__) and the helpers its mixins call."""

    dim: int
    metric: Metric
    config: IndexConfig
    auto_train: bool
    _store: VectorStore
    _owned: list[SortedMap | None]
    _access: SortedMap
    _tenant_of: dict[TenantKey, int]
    _names: list[TenantKey | None]
    _trees: list[TenantTree | None]
    _free: list[int]
    _tree: SharedTree
    _trained_n: int
    _crad: np.ndarray | None
    _defer_training: int
    _graph: ProximityGraph | None
    _tenant_graphs: TenantGraphs
    tenant_graph_min: int
    _sorted: dict[int, tuple[Any, np.ndarray]]
    _lazy: threading.Lock

    def __len__(self) -> int:
        return len(self._store)

    @property
    def is_trained(self) -> bool:
        return self._tree.is_trained

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

    def _rebuild_owned(self) -> None:
        raise NotImplementedError  # CuratorIndex's


def _check_key(key: Any) -> TenantKey:
    if type(key) is str and name_ok(key):  # a name checked before, in one cached call
        return key
    if isinstance(key, int | np.integer) and not isinstance(key, bool) and key >= 0:
        return int(key)
    return check_tenant(key)


def _check_keys(keys: Any, empty_ok: bool = False) -> list[TenantKey]:
    if isinstance(keys, str | int | np.integer):
        return [_check_key(keys)]
    out = [_check_key(k) for k in keys]
    if not out and not empty_ok:
        raise InvalidArgument("expected at least one tenant, got none")
    return out


def _pair(slots: np.ndarray, tenant: int) -> np.ndarray:
    return (np.asarray(slots, np.int64) << 32) | np.int64(tenant)


def _pairs(slots: np.ndarray, tenants: list[int]) -> np.ndarray:
    """Access keys of every (slot, tenant), tenant-major (len(tenants) * n,) int64; one slot's
    (the write path's) built from Python ints."""
    if len(slots) == 1:
        high = int(slots[0]) << 32
        return np.array([high | t for t in tenants], np.int64)
    s = np.asarray(slots, np.int64) << 32
    if len(tenants) == 1:
        return s | np.int64(tenants[0])
    return np.concatenate([s | np.int64(t) for t in tenants])
