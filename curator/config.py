"""Index and search parameters: frozen dataclasses with defaults that work."""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any, TypeVar

from curator.errors import InvalidArgument

__all__ = ["DatabaseConfig", "IndexConfig", "Metric", "SearchParams", "from_env"]


class Metric(enum.StrEnum):
    """Distance of a collection. Search returns distances where smaller is closer:
    L2 -> squared L2, IP -> negative inner product, COSINE -> 1 - cosine similarity."""

    L2 = "l2"
    IP = "ip"
    COSINE = "cosine"

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidArgument(
                f"expected metric one of {[m.value for m in cls]}, got {value!r}"
            ) from None


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Shape of the shared clustering tree and of the per-tenant shortlists.

    branching: children per internal node (k of each k-means), 2..64.
    max_leaf_size: a training node with more points than this is split.
    max_sl_size: a tenant's shortlist at an internal node splits past this size.
    max_depth: depth limit of the shared tree.
    train_min_vectors: the tree is trained automatically once the collection holds this many
        vectors; before that every search is an exact scan.
    retrain_growth: retrain automatically once the collection has grown this many times
        past the size the tree was trained on (0 disables).
    kmeans_niter / kmeans_max_points_per_centroid: faiss k-means per node.
    seed: makes training reproducible.
    graph_degree: links per vector of the proximity graph that serves large filters and
        unfiltered search (built when a search first needs it, then maintained); 0 = none.
    graph_ef_construction: search width when linking a vector into the graph.
    """

    branching: int = 32
    max_leaf_size: int = 256
    max_sl_size: int = 256
    max_depth: int = 8
    train_min_vectors: int = 10_000
    retrain_growth: float = 2.0
    kmeans_niter: int = 20
    kmeans_max_points_per_centroid: int = 256
    seed: int = 1234
    graph_degree: int = 32
    graph_ef_construction: int = 100

    def __post_init__(self) -> None:
        _check_range("branching", self.branching, 2, 64)
        _check_range("max_leaf_size", self.max_leaf_size, 1, 1 << 20)
        _check_range("max_sl_size", self.max_sl_size, 1, 1 << 20)
        _check_range("max_depth", self.max_depth, 1, 16)
        _check_range("train_min_vectors", self.train_min_vectors, 1, 1 << 40)
        _check_range("kmeans_niter", self.kmeans_niter, 1, 1000)
        _check_range("graph_degree", self.graph_degree, 0, 256)
        _check_range("graph_ef_construction", self.graph_ef_construction, 1, 4096)
        _check_range(
            "kmeans_max_points_per_centroid", self.kmeans_max_points_per_centroid, 1, 1 << 20
        )
        if not (self.retrain_growth == 0 or self.retrain_growth > 1):
            raise InvalidArgument(f"expected retrain_growth 0 or > 1, got {self.retrain_growth}")


@dataclasses.dataclass(frozen=True)
class SearchParams:
    """Knobs of one search; the same names are used by the server, SDK and benchmarks.

    search_ef: size of the running candidate list; the search stops at the first scanned
        shortlist that does not improve a full list. The recall knob (>= k is useful).
    beam_size: width of the beam descent that seeds the best-first frontier (0 = none).
    variance_boost: node score is ||q - c||^2 - variance_boost * mean squared radius (the
        paper uses 0.4; on the Debian data 0 reaches the same recall with fewer scans).
    exact_search_threshold: tenants (or filter results) with at most this many vectors are
        scanned exactly instead of searched through the tree.
    """

    search_ef: int = 128
    beam_size: int = 8
    variance_boost: float = 0.0
    exact_search_threshold: int = 1024

    def __post_init__(self) -> None:
        _check_range("search_ef", self.search_ef, 1, 1 << 20)
        _check_range("beam_size", self.beam_size, 0, 4096)
        _check_range("exact_search_threshold", self.exact_search_threshold, 0, 1 << 40)
        if not (0.0 <= self.variance_boost <= 10.0):
            raise InvalidArgument(f"expected variance_boost in [0, 10], got {self.variance_boost}")


def _check_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"expected {name} an integer in [{lo}, {hi}], got {value!r}")


T = TypeVar("T")


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def from_env(cls: type[T], prefix: str = "CURATOR_", **overrides: Any) -> T:
    """Build a config dataclass from defaults, then `CURATOR_<FIELD>` variables, then overrides."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        raw = os.environ.get(prefix + field.name.upper())
        if raw is not None:
            kind: Any = type(field.default)
            if kind is bool:
                kind = _parse_bool
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise InvalidArgument(
                    f"expected {prefix}{field.name.upper()} of type {kind.__name__}, got {raw!r}"
                ) from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    """Where and how the database keeps its data.

    data_dir: the LMDB environment and index snapshots live here.
    sync: fsync every acknowledged write (durable across power loss). False is faster; a killed
        process still loses nothing, an OS crash may lose the last writes.
    map_size / max_map_size: initial LMDB map; it doubles as needed up to max_map_size
        (0 = until the disk is full).
    snapshot_every_writes / snapshot_every_seconds: a collection's index is snapshotted in the
        background after this many writes, or this long after its first unsnapshotted write
        (0 disables that trigger).
    max_batch / max_queries / max_document_bytes: request limits (ResourceExhausted past them).
    max_response_bytes: the largest search response (nq x k x (id + distance [+ vector]) plus
        the documents); checked from the request before searching, and while documents are
        fetched (ResourceExhausted past it). Keep it below the server's max_message_bytes.
    tenant_max_bytes: the most bytes of vectors (float32 payload) and documents one tenant may
        own, over all collections (0 = no quota); an upsert past it is ResourceExhausted.
    write_reserve_bytes: space ordinary writes leave free (in the map and allocated on disk)
        so that deletes, drops and cache invalidations work on a full store (at most an eighth
        of max_map_size).
    train_threads: threads a (re)training off the write path may use (faiss k-means, the
        routing kernels); 0 = one fewer than the machine's cores (at least one), so that
        searches and writes keep a core while it runs.
    """

    data_dir: str = "curator-data"
    sync: bool = True
    map_size: int = 64 << 20
    max_map_size: int = 0
    snapshot_every_writes: int = 10_000
    snapshot_every_seconds: float = 300.0
    max_batch: int = 100_000
    max_queries: int = 10_000
    max_document_bytes: int = 1 << 20
    max_response_bytes: int = 32 << 20
    tenant_max_bytes: int = 16 << 30
    write_reserve_bytes: int = 8 << 20
    train_threads: int = 0

    def __post_init__(self) -> None:
        _check_range("map_size", self.map_size, 1 << 16, 1 << 50)
        _check_range("max_map_size", self.max_map_size, 0, 1 << 50)
        _check_range("snapshot_every_writes", self.snapshot_every_writes, 0, 1 << 40)
        _check_range("max_batch", self.max_batch, 1, 1 << 30)
        _check_range("max_queries", self.max_queries, 1, 1 << 30)
        _check_range("max_document_bytes", self.max_document_bytes, 0, 1 << 30)
        _check_range("max_response_bytes", self.max_response_bytes, 1 << 10, 1 << 31)
        _check_range("tenant_max_bytes", self.tenant_max_bytes, 0, 1 << 50)
        _check_range("write_reserve_bytes", self.write_reserve_bytes, 0, 1 << 40)
        _check_range("train_threads", self.train_threads, 0, 1 << 12)
        if self.snapshot_every_seconds < 0:
            raise InvalidArgument(
                f"expected snapshot_every_seconds >= 0, got {self.snapshot_every_seconds}"
            )


#: gRPC channel options of every channel the project opens (SDK, node to node, etcd): gRPC's
#: default reconnect backoff grows to 120 s, which leaves a client cut off long after a
#: restarted server (or etcd) is back; retry the connection at most a second apart instead.
GRPC_RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
