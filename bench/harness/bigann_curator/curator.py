"""Curator DB behind big-ann-benchmarks' BaseFilterANN contract (filter track).

Labels are tenants: a vector's label set is its access list (owner = its first label, grants
for the others; vectors without labels belong to a tenant no query names). A query with one
label is that tenant's search; with two labels, the AND (vectors readable by both). Queries
with the same label set are searched as one batch, and the batches run concurrently on
`threads` threads (default: the CPUs this process may use). Setup, build, memory accounting
and how the track scores short answers: README.md next to this file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.harness.engine import Engine, describe, query_params
from curator.config import SearchParams

try:
    from neurips23.filter.base import BaseFilterANN
except ImportError:  # pragma: no cover - depends on the environment
    BaseFilterANN = object

_NO_LABEL = "unlabelled"


class CuratorFilter(BaseFilterANN):  # type: ignore[misc, valid-type]
    def __init__(
        self,
        metric: str,
        index_params: dict[str, Any] | None = None,
        mode: str = "inprocess",
        threads: int | None = None,
    ) -> None:
        self._engine = Engine(metric, index_params, mode)
        self._params = SearchParams()
        self.threads = int(threads) if threads else len(os.sched_getaffinity(0))
        if self.threads < 1:
            raise ValueError(f"expected threads >= 1, got {threads!r}")
        self._n_labels = 0
        self._groups = 0
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
        self._n_labels = n_labels

    def load_index(self, dataset: Any) -> bool:
        return False

    def set_query_arguments(self, *args: Any, **kwargs: Any) -> None:
        """The track passes one dict (`query-args` entries); a list-wrapped dict, positional
        values or keywords work too (see bench.harness.engine.query_params)."""
        self._params = query_params(*args, **kwargs)
        self.name = f"Curator-filter({self._engine.mode}, {describe(self._params)})"

    def filtered_query(self, X: np.ndarray, filter: Any, k: int) -> None:
        """X (nq, d); filter: CSR (nq, n_labels), one or two labels a row (AND'ed)."""
        q = np.ascontiguousarray(X, np.float32)
        f = filter.tocsr()
        if f.shape[0] != len(q):
            raise ValueError(f"expected {len(q)} filter rows, got {f.shape[0]}")
        groups = label_groups(np.asarray(f.indptr), np.asarray(f.indices))
        known = [(key, rows) for key, rows in groups if max(key) < self._n_labels]
        self._groups = len(groups)
        self.res = self._engine.search_groups(
            q, k, [([str(t) for t in key], rows) for key, rows in known], self._params, self.threads
        )  # a label no vector carries matches nothing: its rows stay -1

    def get_additional(self) -> dict[str, Any]:
        """Merged into the result file's attributes: index bytes by component, the RSS
        growth during fit, the label groups of the last batch and the threads they ran on."""
        return {**self._engine.additional(), "label_groups": self._groups, "threads": self.threads}

    def query(self, X: np.ndarray, k: int) -> None:
        raise NotImplementedError("the filter adapter answers filtered queries only")

    def get_results(self) -> np.ndarray:
        if self.res is None:
            raise RuntimeError("expected filtered_query before get_results, got none")
        return self.res.astype(np.int32)

    def get_memory_usage(self) -> int:
        """The index's bytes in kB (0 before fit): see Engine.memory_kb."""
        return self._engine.memory_kb()

    def done(self) -> None:
        self._engine.close()

    def track(self) -> str:
        return "filter"

    def __str__(self) -> str:
        return self.name


def label_groups(
    indptr: np.ndarray, labels: np.ndarray
) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Query rows grouped by label set, from a CSR filter's indptr (nq + 1,) and indices:
    [(sorted labels, rows int64)], sorted by label set. Rows must carry 1 or 2 labels."""
    counts = np.diff(indptr)
    if len(counts) == 0:
        return []
    bad = np.flatnonzero((counts < 1) | (counts > 2))
    if len(bad):
        raise ValueError(f"expected 1 or 2 labels per query, got {counts[bad[0]]} in row {bad[0]}")
    first = labels[indptr[:-1]].astype(np.int64)
    second = np.where(counts == 2, labels[np.minimum(indptr[:-1] + 1, len(labels) - 1)], -1)
    lo = np.where(counts == 2, np.minimum(first, second), first)
    hi = np.where((counts == 2) & (first != second), np.maximum(first, second), -1)
    keys, inverse = np.unique(np.stack([lo, hi], 1), axis=0, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    bounds = np.cumsum(np.bincount(inverse.ravel(), minlength=len(keys)))[:-1]
    return [
        ((int(a),) if b < 0 else (int(a), int(b)), rows)
        for (a, b), rows in zip(keys.tolist(), np.split(order, bounds), strict=True)
    ]
