"""The Curator side of the harness adapters: one collection, in-process or over gRPC."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from curator.config import DatabaseConfig, IndexConfig, SearchParams

__all__ = ["Engine"]

METRICS = {"angular": "cosine", "euclidean": "l2", "cosine": "cosine", "l2": "l2", "ip": "ip"}
_KEY = "harness-admin"


class Engine:
    """A collection in a private database; `mode` "inprocess" (default) or "grpc". With gRPC
    the adapter talks to the server at $CURATOR_HARNESS_ADDRESS with the admin key in
    $CURATOR_HARNESS_KEY (a collection and tenants of its own, dropped by `close`), or, if no
    address is set, to an embedded server on an ephemeral 127.0.0.1 port. Everything is
    created in `fit`, after a harness may have forked (gRPC is not fork-safe)."""

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
        self.collection = "bench"
        self._tenants: list[str] = []
        self._dir = ""
        self.db: Any = None
        self._server: Any = None
        self._client: Any = None

    def open(self, dim: int, tenants: Sequence[str]) -> None:
        address = os.environ.get("CURATOR_HARNESS_ADDRESS", "")
        if self.mode == "grpc" and address:
            from client import Client

            self._client = Client(address, os.environ.get("CURATOR_HARNESS_KEY", ""), timeout=600)
            self.collection = f"bench-{uuid.uuid4().hex[:8]}"
            self._tenants = [f"{self.collection}-{t}" for t in tenants]
            for t in self._tenants:
                self._client.create_tenant(t)
            self._client.create_collection(self.collection, dim, self.metric, **self.index_params)
            return
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

    def _tenant(self, name: str) -> str:
        return f"{self.collection}-{name}" if self.db is None else name

    def load(self, x: np.ndarray, owners: np.ndarray, grants: dict[str, np.ndarray]) -> None:
        """Insert rows of `x` (ids = row numbers) owned by owners[i], then the grants."""
        if self.db is None:  # an external server trains its tree as the collection grows
            order = np.argsort(owners, kind="stable")
            bounds = np.flatnonzero(owners[order][1:] != owners[order][:-1]) + 1
            for rows in np.split(order, bounds):
                self._client.upsert(
                    self.collection, rows, x[rows], tenant=self._tenant(str(owners[rows[0]]))
                )
            for tenant, ids in grants.items():
                for owner, part in _by_owner(owners, ids):
                    self._client.grant(
                        self.collection, part, self._tenant(tenant), owner=self._tenant(owner)
                    )
            return
        with self.db.bulk_load("bench"):  # trains once, at the end
            order = np.argsort(owners, kind="stable")
            bounds = np.flatnonzero(owners[order][1:] != owners[order][:-1]) + 1
            for rows in np.split(order, bounds):
                self.db.upsert(
                    "bench", rows.astype(np.uint64), x[rows], tenant=str(owners[rows[0]])
                )
            for tenant, ids in grants.items():
                for owner, part in _by_owner(owners, ids):
                    self.db.grant("bench", part.astype(np.uint64), tenant, owner=owner)

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
            self.collection,
            q,
            k,
            tenant=[self._tenant(t) for t in tenants],
            params=params,
            require_all=require_all,
        )
        return np.asarray(res.ids).view(np.int64)  # NO_ID padding reads as -1

    def memory_kb(self) -> int:
        """RSS of this process (with an external server, of this client only)."""
        return int(psutil.Process().memory_info().rss // 1024)

    def close(self) -> None:
        if self._client is not None and self.db is None:  # external server: clean up
            self._client.drop_collection(self.collection)
            for t in self._tenants:
                self._client.drop_tenant(t)
        if self._client is not None:
            self._client.close()
        if self._server is not None:
            self._server.stop(1)
        if self.db is not None:
            self.db.close(snapshot=False)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self.db = self._server = self._client = None


def _by_owner(owners: np.ndarray, ids: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Row ids grouped by their owner (ids are scoped per owner, so grants name one)."""
    ids = np.asarray(ids)
    own = owners[ids]
    order = np.argsort(own, kind="stable")
    bounds = np.flatnonzero(own[order][1:] != own[order][:-1]) + 1
    return [(str(own[part[0]]), ids[part]) for part in np.split(order, bounds) if len(part)]
