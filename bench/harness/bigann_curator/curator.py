"""Curator DB behind big-ann-benchmarks' BaseFilterANN contract (filter track).

Labels are tenants: a vector's label set is its access list (owner = its first label, grants
for the others; vectors without labels belong to a tenant no query names). A query with one
label is that tenant's search; with two labels, the AND (vectors readable by both). Queries
with the same label set are searched as one batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.harness.engine import Engine
from curator.config import SearchParams

try:
    from neurips23.filter.base import BaseFilterANN
except ImportError:  # pragma: no cover - depends on the environment
    BaseFilterANN = object

_NO_LABEL = "unlabelled"


class CuratorFilter(BaseFilterANN):  # type: ignore[misc, valid-type]
    def __init__(
        self, metric: str, index_params: dict[str, Any] | None = None, mode: str = "inprocess"
    ) -> None:
        self._engine = Engine(metric, index_params, mode)
        self._params = SearchParams()
        self.res: np.ndarray | None = None
        self.name = f"Curator-filter({mode})"

    def fit(self, dataset: Any) -> None:
        """`dataset`: a harness dataset name, or an object with get_dataset() (nb, d) and
        get_dataset_metadata() (a CSR matrix nb x n_labels)."""
        if isinstance(dataset, str):
            from benchmark.datasets import DATASETS  # the harness, only when it drives us

            dataset = DATASETS[dataset]()
        x = np.ascontiguousarray(dataset.get_dataset(), np.float32)
        meta = dataset.get_dataset_metadata().tocsr()
        indptr, labels = np.asarray(meta.indptr), np.asarray(meta.indices)
        n_labels = meta.shape[1]
        has = np.diff(indptr) > 0
        owners = np.full(len(x), n_labels, np.int64)  # n_labels = the "unlabelled" tenant
        owners[has] = labels[indptr[:-1][has]]
        rows = np.repeat(np.arange(len(x)), np.diff(indptr))
        extra = rows >= 0
        extra[indptr[:-1][has]] = False  # each row's first label is its owner
        grants = {}
        order = np.argsort(labels[extra], kind="stable")
        lab, row = labels[extra][order], rows[extra][order]
        bounds = np.flatnonzero(lab[1:] != lab[:-1]) + 1
        for part_l, part_r in zip(np.split(lab, bounds), np.split(row, bounds), strict=True):
            if len(part_l):
                grants[str(part_l[0])] = part_r
        self._engine.open(x.shape[1], [str(t) for t in range(n_labels + 1)])
        self._engine.load(x, owners, grants)

    def load_index(self, dataset: Any) -> bool:
        return False

    def set_query_arguments(self, query_args: dict[str, Any] | None = None) -> None:
        args = dict(query_args or {})
        self._params = SearchParams(**args)
        self.name = f"Curator-filter({self._engine.mode}, {args})"

    def filtered_query(self, X: np.ndarray, filter: Any, k: int) -> None:
        q = np.ascontiguousarray(X, np.float32)
        f = filter.tocsr()
        out = np.full((len(q), k), -1, np.int64)
        keys = [
            tuple(sorted(f.indices[f.indptr[i] : f.indptr[i + 1]].tolist())) for i in range(len(q))
        ]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            if len(key) not in (1, 2):
                raise ValueError(f"expected 1 or 2 labels per query, got {len(key)}")
            tenants = [str(t) for t in key]
            out[members] = self._engine.search(
                q[members], k, tenants, self._params, require_all=len(tenants) == 2
            )
        self.res = out

    def query(self, X: np.ndarray, k: int) -> None:
        raise NotImplementedError("the filter adapter answers filtered queries only")

    def get_results(self) -> np.ndarray:
        assert self.res is not None, "filtered_query first"
        return self.res.astype(np.int32)

    def get_memory_usage(self) -> int:
        return self._engine.memory_kb()

    def done(self) -> None:
        self._engine.close()

    def track(self) -> str:
        return "filter"

    def __str__(self) -> str:
        return self.name
