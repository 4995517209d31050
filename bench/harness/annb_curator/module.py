"""Curator DB behind ann-benchmarks' BaseANN contract (unfiltered search).

ann-benchmarks has no filters: every vector is owned by one tenant and searched through that
tenant's sub-tree, which then covers the whole shared tree. Query argument: search_ef.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.harness.engine import Engine
from curator.config import SearchParams

try:  # the harness's base class when it is installed; the contract is duck-typed anyway
    from ann_benchmarks.algorithms.base.module import BaseANN
except ImportError:  # pragma: no cover - depends on the environment
    BaseANN = object

_TENANT = "0"  # the one tenant, owner of every vector (tenants are named by number)


class CuratorANN(BaseANN):  # type: ignore[misc, valid-type]
    def __init__(
        self, metric: str, index_params: dict[str, Any] | None = None, mode: str = "inprocess"
    ) -> None:
        self._engine = Engine(metric, index_params, mode)
        self._params = SearchParams()
        self._res: np.ndarray | None = None
        self.name = f"Curator({mode})"

    def fit(self, X: np.ndarray) -> None:
        x = np.ascontiguousarray(X, np.float32)
        self._engine.open(x.shape[1], [_TENANT])
        self._engine.load(x, np.zeros(len(x), np.int64), {})

    def set_query_arguments(self, search_ef: int) -> None:
        self._params = SearchParams(search_ef=int(search_ef))
        self.name = f"Curator({self._engine.mode}, search_ef={search_ef})"

    def query(self, v: np.ndarray, n: int) -> list[int]:
        ids = self._engine.search(np.asarray(v, np.float32)[None], n, [_TENANT], self._params)[0]
        return ids[ids >= 0].tolist()

    def batch_query(self, X: np.ndarray, n: int) -> None:
        self._res = self._engine.search(np.asarray(X, np.float32), n, [_TENANT], self._params)

    def get_batch_results(self) -> list[list[int]]:
        assert self._res is not None, "batch_query first"
        return [row[row >= 0].tolist() for row in self._res]

    def get_memory_usage(self) -> int:
        return self._engine.memory_kb()

    def get_additional(self) -> dict[str, Any]:
        return {}

    def done(self) -> None:
        self._engine.close()

    def __str__(self) -> str:
        return self.name
