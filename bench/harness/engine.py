"""The Curator side of the harness adapters: one collection, in-process or over gRPC."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from curator.config import DatabaseConfig, IndexConfig, SearchParams

__all__ = ["Engine"]

METRICS = {"angular": "cosine", "euclidean": "l2", "cosine": "cosine", "l2": "l2", "ip": "ip"}
_KEY = "harness-admin"


class Engine:
    """A collection named "bench" in a private database; `mode` "inprocess" (default) or
    "grpc" (an embedded server on an ephemeral 127.0.0.1 port, searched through the SDK).
    Created lazily, in `fit`, so that a harness may fork first (gRPC is not fork-safe)."""

    def __init__(
        self, metric: str, index_params: dict[str, Any] | None = None, mode: str = "inprocess"
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"expected a metric in {sorted(METRICS)}, got {metric!r}")
        if mode not in ("inprocess", "grpc"):
            raise ValueError(f"expected mode 'inprocess' or 'grpc', got {mode!r}")
        self.metric = METRICS[metric]
        self.index_params = dict(index_params or {})
        self.mode = mode
        self._dir = ""
        self.db: Any = None
        self._server: Any = None
        self._client: Any = None

    def open(self, dim: int, tenants: Sequence[str]) -> None:
        from curator.database import Database

        self._dir = tempfile.mkdtemp(prefix="curator-harness-")
        self.db = Database(
            DatabaseConfig(
                data_dir=self._dir,
                sync=False,
                snapshot_every_writes=0,
                snapshot_every_seconds=0,
                max_batch=10**7,
            ),
            background=False,
        )
        for t in tenants:
            self.db.create_tenant(t)
        self.db.create_collection("bench", dim, self.metric, IndexConfig(**self.index_params))
        if self.mode == "grpc":
            from client import Client
            from server.app import create_server
            from server.config import ServerConfig

            self.db.keys.ensure(_KEY, None, "benchmark harness")
            self._server = create_server(self.db, ServerConfig(address="127.0.0.1:0"))
            self._client = Client(f"127.0.0.1:{self._server.port}", _KEY, timeout=600)

    def load(self, x: np.ndarray, owners: np.ndarray, grants: dict[str, np.ndarray]) -> None:
        """Insert rows of `x` (ids = row numbers) owned by owners[i], then the grants."""
        c = self.db._collection("bench")
        with c.index.deferred_training():
            order = np.argsort(owners, kind="stable")
            bounds = np.flatnonzero(owners[order][1:] != owners[order][:-1]) + 1
            for rows in np.split(order, bounds):
                self.db.upsert(
                    "bench", rows.astype(np.uint64), x[rows], tenant=str(owners[rows[0]])
                )
            for tenant, ids in grants.items():
                self.db.grant("bench", ids.astype(np.uint64), tenant)
        c.index.train()

    def search(
        self,
        q: np.ndarray,
        k: int,
        tenants: Sequence[str],
        params: SearchParams,
        require_all: bool = False,
    ) -> np.ndarray:
        """(nq, k) int64 ids, -1 padded."""
        api = self._client if self.mode == "grpc" else self.db
        res = api.search(
            "bench", q, k, tenant=list(tenants), params=params, require_all=require_all
        )
        return np.asarray(res.ids)

    def memory_kb(self) -> int:
        return int(psutil.Process().memory_info().rss // 1024)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._server is not None:
            self._server.stop(1)
        if self.db is not None:
            self.db.close(snapshot=False)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self.db = self._server = self._client = None
