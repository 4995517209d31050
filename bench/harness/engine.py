"""The Curator side of the harness adapters: one collection, in-process or over gRPC."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psutil

from curator.config import DatabaseConfig, IndexConfig, SearchParams
from curator.errors import InvalidArgument

__all__ = ["Engine", "describe", "query_params"]

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
        self._rss_open_kb = self._rss_loaded_kb = 0

    def open(self, dim: int, tenants: Sequence[str]) -> None:
        self._rss_open_kb = self.rss_kb()
        address = os.environ.get("CURATOR_HARNESS_ADDRESS", "")
        if self.mode == "grpc" and address:
            from client import Client

            self._client = Client(address, os.environ.get("CURATOR_HARNESS_KEY", ""), timeout=600)
            self.collection = f"bench-{uuid.uuid4().hex[:8]}"
            self._tenants = [f"{self.collection}-{t}" for t in tenants]
            for t in self._tenants:
                self._client.create_tenant(t)
            self._client.create_collection(
                self.collection, dim, self.metric, IndexConfig(**self.index_params)
            )
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
        try:
            self._load(x, owners, grants)
        finally:
            self._rss_loaded_kb = self.rss_kb()

    def _load(self, x: np.ndarray, owners: np.ndarray, grants: dict[str, np.ndarray]) -> None:
        if self.db is None:  # an external server
            for rows in _runs(owners):
                self._client.upsert(
                    self.collection, rows, x[rows], tenant=self._tenant(str(owners[rows[0]]))
                )
            for tenant, ids in grants.items():
                for owner, part in _by_owner(owners, ids):
                    self._client.grant(
                        self.collection, part, self._tenant(tenant), owner=self._tenant(owner)
                    )
            self._client.train(self.collection)  # once, after the load (faiss-style)
            return
        with self.db.bulk_load("bench"):  # trains once, at the end
            for rows in _runs(owners):
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

    def search_groups(
        self,
        q: np.ndarray,
        k: int,
        groups: Sequence[tuple[Sequence[str], np.ndarray]],
        params: SearchParams,
        threads: int,
    ) -> np.ndarray:
        """(nq, k) int64 ids, -1 padded: each group (tenants, query rows) searched as one
        batch, with the AND of its tenants when it names two; groups run concurrently on
        `threads` threads (the search kernels release the GIL; gRPC calls wait off it)."""
        out = np.full((len(q), k), -1, np.int64)

        def run(group: tuple[Sequence[str], np.ndarray]) -> None:
            tenants, rows = group
            out[rows] = self.search(q[rows], k, tenants, params, require_all=len(tenants) == 2)

        largest_first = sorted(groups, key=lambda g: -len(g[1]))  # balances the threads
        if threads <= 1 or len(groups) <= 1:
            for g in largest_first:
                run(g)
            return out
        with ThreadPoolExecutor(min(threads, len(groups))) as pool:
            list(pool.map(run, largest_first))  # list(): re-raise the first error here
        return out

    def index_bytes(self) -> dict[str, int]:
        """The collection's own accounting of its index (`memory_usage()`: vectors, tree,
        shortlists, access lists, id maps...; "total" is their sum), in bytes; over gRPC the
        server's figure. Not LMDB: its pages are the durable copy, mapped from the file."""
        api = self._client if self.db is None else self.db
        if api is None:
            return {"total": 0}
        return {k: int(v) for k, v in api.describe_collection(self.collection).memory.items()}

    def memory_kb(self) -> int:
        """What the adapters report as `get_memory_usage()`: the index's bytes in kB (0
        before `open`). Both harnesses record after-fit minus before-fit, so the figure they
        store is the index's size, not the process's RSS growth: that also counts the LMDB
        pages the load touched (the durable copy of every vector), numba's compiled code and
        the allocator's slack (that growth is recorded apart, by `additional`)."""
        return -(-self.index_bytes()["total"] // 1024)

    def additional(self) -> dict[str, int]:
        """Flat integer attributes for the harnesses' result files (HDF5 attributes):
        index bytes by component, and the RSS growth of this process across `open`+`load`."""
        out = {f"index_{part}_bytes": n for part, n in self.index_bytes().items()}
        out["index_bytes"] = out.pop("index_total_bytes", 0)
        if self._rss_loaded_kb:
            out["rss_delta_kb"] = self._rss_loaded_kb - self._rss_open_kb
        return out

    @staticmethod
    def rss_kb() -> int:
        """RSS of this process in kB (with an external server, of this client only)."""
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


def _runs(values: np.ndarray) -> list[np.ndarray]:
    """Positions of `values` grouped by value (each group ascending), in order of value."""
    order = np.argsort(values, kind="stable")
    bounds = np.flatnonzero(values[order][1:] != values[order][:-1]) + 1
    return [part for part in np.split(order, bounds) if len(part)]


def _by_owner(owners: np.ndarray, ids: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Row ids grouped by their owner (ids are scoped per owner, so grants name one)."""
    ids = np.asarray(ids)
    own = owners[ids]
    return [(str(own[part[0]]), ids[part]) for part in _runs(own)]


_FIELDS = [f.name for f in dataclasses.fields(SearchParams)]


def query_params(*args: Any, **kwargs: Any) -> SearchParams:
    """SearchParams from what a harness passes to `set_query_arguments`, in any of its forms:
    ann-benchmarks' positional values from `query_args: [[16, 32]]` (in field order:
    search_ef, beam_size, variance_boost, exact_search_threshold); one dict (the filter
    track's `query-args`, ann-benchmarks' `query_arg_groups`); either wrapped in a list
    (a whole query-argument group passed as one argument); or keywords. Unknown names and
    bad values raise InvalidArgument."""
    while len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])  # a list-wrapped group
    if len(args) == 1 and isinstance(args[0], dict):
        named = dict(args[0])
        args = ()
    else:
        named = {}
    if len(args) > len(_FIELDS):
        raise InvalidArgument(f"expected at most {len(_FIELDS)} query arguments, got {args!r}")
    for value in args:
        if isinstance(value, str | dict | list | tuple):
            raise InvalidArgument(
                f"expected query arguments as numbers in the order {_FIELDS}, or one dict, "
                f"got {args!r} (a dict unpacked with * passes its keys: pass the dict itself)"
            )
    named.update(zip(_FIELDS, args, strict=False))
    for key, value in kwargs.items():
        if key in named:
            raise InvalidArgument(f"expected {key} once, got it twice")
        named[key] = value
    unknown = sorted(set(named) - set(_FIELDS))
    if unknown:
        raise InvalidArgument(f"expected query arguments among {_FIELDS}, got {unknown}")
    return SearchParams(**named)


def describe(params: SearchParams) -> str:
    """The plot label's part for `params`: search_ef, then any field not at its default."""
    default = SearchParams()
    parts = [f"search_ef={params.search_ef}"] + [
        f"{f}={getattr(params, f)}"
        for f in _FIELDS[1:]
        if getattr(params, f) != getattr(default, f)
    ]
    return ", ".join(parts)
