"""Curator DB behind ann-benchmarks' BaseANN contract (unfiltered search).

ann-benchmarks has no filters: every vector is owned by one tenant and searched through that
tenant's sub-tree, which then covers the whole shared tree. Query arguments: SearchParams
(see `bench.harness.engine.query_params`; `query_args: [[16, 32]]` sets search_ef). Setup,
build and memory accounting: README.md next to this file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.harness.engine import Engine, describe, query_params
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

    def set_query_arguments(self, *args: Any, **kwargs: Any) -> None:
        """`(16)`, `({"search_ef": 16})`, `([16])`, `([{"search_ef": 16}])` or keywords."""
        self._params = query_params(*args, **kwargs)
        self.name = f"Curator({self._engine.mode}, {describe(self._params)})"

    def query(self, v: np.ndarray, n: int) -> list[int]:
        ids = self._engine.search(np.asarray(v, np.float32)[None], n, [_TENANT], self._params)[0]
        return ids[ids >= 0].tolist()

    def batch_query(self, X: np.ndarray, n: int) -> None:
        self._res = self._engine.search(np.asarray(X, np.float32), n, [_TENANT], self._params)

    def get_batch_results(self) -> list[list[int]]:
        if self._res is None:
            raise RuntimeError("expected batch_query before get_batch_results, got none")
        return [row[row >= 0].tolist() for row in self._res]

    def get_memory_usage(self) -> int:
        """The index's bytes in kB (0 before fit): see Engine.memory_kb."""
        return self._engine.memory_kb()

    def get_additional(self) -> dict[str, Any]:
        """Merged into each result file's attributes: index bytes by component and the
        process's RSS growth during fit (rss_delta_kb), for comparison."""
        return self._engine.additional()

    def done(self) -> None:
        self._engine.close()

    def __str__(self) -> str:
        return self.name
