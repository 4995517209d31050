"""The indexes Curator is compared with, behind one small interface.

Each class: build(ds) -> None; search(tenant, queries (nq, d), k, setting) -> (ids, dists) with
distances in the dataset's metric (smaller is closer); settings: the sweep of its search knob;
insert_one(row, vector, tenants): add one more vector for its tenants (for the insert timing).
"""

from __future__ import annotations

from typing import Any, ClassVar

import faiss
import hnswlib
import numpy as np

from bench.datasets import Dataset
from curator import CuratorIndex, IndexConfig, SearchParams

__all__ = ["CuratorBaseline", "PerTenantHNSW", "SharedFaissFilter", "SharedHNSWFilter"]

HNSW_M, HNSW_EFC = 16, 100


def _space(metric: str) -> str:
    """hnswlib's 'ip' distance is 1 - ip: the cosine distance of unit vectors."""
    return "l2" if metric == "l2" else "ip"


class CuratorBaseline:
    name = "curator"
    settings: ClassVar[list[dict[str, Any]]] = [
        {"search_ef": ef} for ef in (16, 32, 64, 128, 256, 512)
    ]

    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()

    def build(self, ds: Dataset) -> None:
        self.index = CuratorIndex(ds.base.shape[1], ds.metric, self.config)
        owners = ds.tenants[ds.indptr[:-1]]
        order = np.argsort(owners, kind="stable")
        bounds = np.flatnonzero(np.diff(owners[order])) + 1
        self.index.auto_train = False  # load everything, then train once
        for rows in np.split(order, bounds):
            self.index.insert(rows.astype(np.uint64), ds.base[rows], owner=str(owners[rows[0]]))
        extra = np.ones(len(ds.tenants), bool)
        extra[ds.indptr[:-1]] = False  # first entry of each list is the owner
        rows = np.repeat(np.arange(len(ds.base)), np.diff(ds.indptr))[extra]
        tens = ds.tenants[extra]
        row_owner = owners[rows]
        # grants name (owner, ids): ids are scoped per owner
        order = np.lexsort((row_owner, tens))
        keys = tens[order].astype(np.int64) * (int(owners.max()) + 1) + row_owner[order]
        bounds = np.flatnonzero(np.diff(keys)) + 1
        for part in np.split(order, bounds) if len(order) else []:
            self.index.grant(
                rows[part].astype(np.uint64), str(tens[part[0]]), owner=str(row_owner[part[0]])
            )
        self.index.train()
        self.index.auto_train = True

    def link(self, shared_graph: bool = True) -> None:
        """What searches would otherwise link in the background while a sweep runs, done
        now: large tenants' own links and (`shared_graph`) the global graph, for unfiltered
        search and tenants past its share of the collection."""
        if shared_graph:
            graph = self.index.build_graph()
            if graph is not None:
                graph.link_pending(self.index._store)
        self.index.link_tenants()

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        return self.index.search(str(tenant), q, k, SearchParams(**setting))

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        self.index.insert([row], x[None], owner=str(tenants[0]))
        for t in tenants[1:]:
            self.index.grant([row], str(t), owner=str(tenants[0]))

    def insert_batch(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> None:
        owners = np.array([t[0] for t in lists])
        for o in np.unique(owners):
            m = owners == o
            self.index.insert(ids[m].astype(np.uint64), x[m], owner=str(o))
        triples = [(i, t, ts[0]) for i, ts in zip(ids, lists, strict=True) for t in ts[1:]]
        if triples:
            arr = np.array(triples)
            for t, o in np.unique(arr[:, 1:], axis=0):
                m = (arr[:, 1] == t) & (arr[:, 2] == o)
                self.index.grant(arr[m, 0].astype(np.uint64), str(t), owner=str(o))

    def nbytes(self) -> int:
        return self.index.memory_usage()["total"]


class PerTenantHNSW:
    """One hnswlib index per tenant, vectors copied into each."""

    name = "per-tenant hnswlib"
    settings: ClassVar[list[dict[str, Any]]] = [{"ef": ef} for ef in (10, 16, 32, 64, 128, 256)]

    def build(self, ds: Dataset) -> None:
        self.metric = ds.metric
        self.indexes: dict[int, hnswlib.Index] = {}
        for t, rows in enumerate(ds.tenant_lists()):
            if not len(rows):
                continue
            idx = hnswlib.Index(space=_space(ds.metric), dim=ds.base.shape[1])
            idx.init_index(max_elements=len(rows) + 64, ef_construction=HNSW_EFC, M=HNSW_M)
            idx.add_items(ds.base[rows], rows, num_threads=2)
            self.indexes[t] = idx

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        idx = self.indexes[tenant]
        idx.set_ef(max(setting["ef"], k))
        kk = min(k, idx.get_current_count())
        labels, dist = idx.knn_query(q, kk, num_threads=1)
        return _pad(labels, dist, k)

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        for t in tenants:
            idx = self.indexes.get(int(t))
            if idx is None:
                continue
            if idx.get_current_count() >= idx.get_max_elements():
                idx.resize_index(idx.get_max_elements() * 2)
            idx.add_items(x[None], [row], num_threads=1)

    def insert_batch(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> None:
        pairs = np.array([(j, t) for j, ts in enumerate(lists) for t in ts])
        for t in np.unique(pairs[:, 1]):
            idx = self.indexes.get(int(t))
            if idx is None:
                continue
            rows = pairs[pairs[:, 1] == t, 0]
            need = idx.get_current_count() + len(rows)
            if need > idx.get_max_elements():
                idx.resize_index(max(need, idx.get_max_elements() * 2))
            idx.add_items(x[rows], ids[rows], num_threads=2)


class SharedHNSWFilter:
    """One hnswlib index over all vectors; the tenant is a filter callable at search time."""

    name = "shared hnswlib + filter"
    settings: ClassVar[list[dict[str, Any]]] = [{"ef": ef} for ef in (64, 256, 1024)]

    def build(self, ds: Dataset) -> None:
        self.index = hnswlib.Index(space=_space(ds.metric), dim=ds.base.shape[1])
        self.index.init_index(max_elements=len(ds.base) + 4096, ef_construction=HNSW_EFC, M=HNSW_M)
        self.index.add_items(ds.base, np.arange(len(ds.base)), num_threads=2)
        self.members = {t: set(rows.tolist()) for t, rows in enumerate(ds.tenant_lists())}

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        self.index.set_ef(max(setting["ef"], k))
        allowed = self.members[tenant]
        kk = min(k, len(allowed))
        labels, dist = self.index.knn_query(q, kk, num_threads=1, filter=allowed.__contains__)
        return _pad(labels, dist, k)


class SharedFaissFilter:
    """One faiss index over all vectors; the tenant is an IDSelectorBitmap at search time."""

    def __init__(self, kind: str = "hnsw") -> None:
        self.kind = kind
        self.name = f"shared faiss {kind.upper()} + IDSelector"
        self.settings = (
            [{"efSearch": ef} for ef in (64, 256, 1024)]
            if kind == "hnsw"
            else [{"nprobe": p} for p in (16, 64, 256)]
        )

    def build(self, ds: Dataset) -> None:
        d = ds.base.shape[1]
        metric = faiss.METRIC_L2 if ds.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, HNSW_M, metric)
            self.index.hnsw.efConstruction = HNSW_EFC
        else:
            quantizer = faiss.IndexFlat(d, metric)
            self.index = faiss.IndexIVFFlat(
                quantizer, d, max(16, int(4 * np.sqrt(len(ds.base)))), metric
            )
            self.index.train(
                ds.base[
                    np.random.default_rng(0).choice(
                        len(ds.base), min(len(ds.base), 100_000), replace=False
                    )
                ]
            )
        self.index.add(ds.base)
        self.metric = ds.metric
        self.lists = ds.tenant_lists()
        self.n = len(ds.base)
        self._selectors: dict[int, Any] = {}

    def _selector(self, tenant: int) -> Any:
        sel = self._selectors.get(tenant)
        if sel is None:
            bits = np.zeros(self.n, bool)
            bits[self.lists[tenant]] = True
            packed = np.packbits(bits, bitorder="little")
            sel = (faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(packed)), packed)
            self._selectors[tenant] = sel
        return sel[0]

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        sel = self._selector(tenant)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(k, setting["efSearch"]))
        else:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=setting["nprobe"])
        dist, labels = self.index.search(q, k, params=params)
        if self.metric != "l2":
            dist = np.where(labels >= 0, 1 - dist, np.inf)
        return labels.astype(np.int64), dist.astype(np.float32)


def _pad(labels: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    nq, kk = labels.shape
    ids = np.full((nq, k), -1, np.int64)
    out = np.full((nq, k), np.inf, np.float32)
    ids[:, :kk] = labels
    out[:, :kk] = dist
    return ids, out
