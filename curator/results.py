"""Results returned by the database, in-process and (identically) by the client SDK."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from curator.cache.policy import CategoryPolicy
from curator.config import IndexConfig

__all__ = [
    "NO_ID",
    "CacheLookup",
    "CacheStats",
    "CacheStored",
    "CollectionInfo",
    "Document",
    "IssuedKey",
    "KeyInfo",
    "ModelLoad",
    "PolicyState",
    "Records",
    "SearchResult",
    "ServerInfo",
    "WriteResult",
]

Document = bytes | str | dict | list | None

#: Padding of search result ids (2**64 - 1, an id no vector may have; -1 as int64 bits).
NO_ID = np.uint64(2**64 - 1)


@dataclass(frozen=True)
class WriteResult:
    """seq: write sequence number of the write (durable and visible once returned);
    count: ids affected; tenant_seq: the acting tenant's own write counter after this write
    (what a tenant key is shown as `seq`: the database-wide number would reveal other
    tenants' writes; 0 for the admin)."""

    seq: int
    count: int
    tenant_seq: int = 0


@dataclass
class SearchResult:
    """ids (nq, k) uint64 (padded with NO_ID), distances (nq, k) float32 (inf padded,
    smaller is closer); documents: nq lists of k payloads and vectors (nq, k, d) when asked
    for; seq: the write sequence the answer reflects; owners: nq lists of k owner tenant
    names ("" for padding): ids are scoped per owner, so (owner, id) names a vector; plan:
    how the search ran, when asked for (`explain`)."""

    ids: np.ndarray
    distances: np.ndarray
    documents: list[list[Document]] | None = None
    vectors: np.ndarray | None = None
    seq: int = 0
    owners: list[list[str]] | None = None
    plan: SearchPlan | None = None

    @property
    def found(self) -> np.ndarray:
        """(nq, k) bool: which entries are hits (not padding)."""
        return np.asarray(self.ids) != NO_ID


@dataclass(frozen=True)
class SearchPlan:
    """How a search ran (`explain=True`): path "exact", "tree", "tenant-graph" (the tenant's
    own links) or "graph" (the shared graph, filtered) ("none" when the searched tenants hold
    nothing here); filter_size: vectors the filter admits (an upper
    bound for a union of tenants); ef: the graph's search width (0 unless it ran); touched:
    vectors whose distance was computed, summed over the `queries`."""

    path: str
    filter_size: int
    ef: int
    touched: int
    queries: int


@dataclass
class IdPage:
    """A page of a tenant's ids, ascending: ids (n,) uint64; `next_after` is what to pass as
    `after` for the next page (None: this was the last page)."""

    ids: np.ndarray
    next_after: int | None


@dataclass
class Records:
    """Vectors found by `get`, in request order: ids (n,) uint64, vectors (n, d) float32,
    owner tenants, documents."""

    ids: np.ndarray
    vectors: np.ndarray
    owners: list[str]
    documents: list[Document]


@dataclass(frozen=True)
class CacheLookup:
    """Answer of a semantic-cache lookup.

    hit: a cached response is served; reason: "exact" or "semantic" for a hit, else why it
    missed: "empty" (nothing cached in the partition), "below_threshold", "expired",
    "vetoed" (the verifier rejected the candidates), "not_cacheable" (the category's policy),
    "pending" (another caller is generating this prompt: wait and look up again, or call the
    model). similarity: cosine similarity of the best candidate (nan if none); threshold: the
    one applied (load-adjusted, or learned from feedback); category and category_source
    ("caller", "classifier" or "default"); leader: on a miss, this caller holds the
    single-flight slot for the prompt and is expected to store the answer; age_s: age of the
    entry served. lookup_id: names this lookup in `cache_feedback` (0: nothing to report on:
    no semantic candidate was scored); score: the candidate's score compared with the
    threshold (the cosine, or the verifier's score on the cosine scale); entry_id: on a miss
    with a scored candidate, that candidate; routed_from: the category of an entry served
    across categories (near-identical prompt), else ""."""

    hit: bool
    reason: str
    response: bytes | None
    similarity: float
    entry_id: int
    category: str
    category_source: str
    threshold: float
    leader: bool = False
    age_s: float = 0.0
    lookup_id: int = 0
    score: float = math.nan
    routed_from: str = ""


@dataclass(frozen=True)
class CacheStored:
    """Answer of a cache store: entry_id (0 when not stored), expires_at (unix seconds),
    evicted: entries removed to make room; stored: False when the category is not cacheable."""

    entry_id: int
    expires_at: float
    evicted: int
    stored: bool = True


@dataclass(frozen=True)
class CollectionInfo:
    """What `create_collection` / `describe_collection` report. metric: "l2", "ip" or
    "cosine"; vectors / tenants: counts (a tenant key sees only its own vectors, and 0
    tenants); trained: the shared tree is trained; seq: the last write the index reflects;
    memory: bytes by component ("total" included; empty for a tenant key); quarantined:
    stored rows start-up could not apply (moved aside and logged; admin only)."""

    name: str
    dim: int
    metric: str
    index: IndexConfig = field(default_factory=IndexConfig)
    vectors: int = 0
    tenants: int = 0
    trained: bool = False
    seq: int = 0
    memory: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0


@dataclass(frozen=True)
class KeyInfo:
    """An API key's public record (the secret is never stored). tenant None: an admin key."""

    key_id: str
    tenant: str | None
    description: str
    created: float


class IssuedKey(NamedTuple):
    """A new key: its id and the secret (shown only here). Unpacks as (key_id, secret)."""

    key_id: str
    secret: str


@dataclass(frozen=True)
class ServerInfo:
    """version of the server; principal: "admin" or "tenant:<name>"; seq: the last write
    sequence number (a tenant key: its own write counter); collections / tenants: counts
    (a tenant key: 0 tenants); uptime_seconds since the database (or
    server) started."""

    version: str
    principal: str
    seq: int
    collections: int
    tenants: int
    uptime_seconds: float


@dataclass(frozen=True)
class ModelLoad:
    """The cache's view of a model's load: load (1.0 = at capacity, smoothed), overloaded
    (hysteresis state), pressure in [0, 1] (how far thresholds are relaxed), source
    ("reported", "measured" or "none"), capacity_rps (0 = unknown)."""

    load: float
    overloaded: bool
    pressure: float
    source: str
    capacity_rps: float


@dataclass(frozen=True)
class PolicyState:
    """A category's policy and what applies now for a model: the load-adjusted threshold and
    TTL, and the pressure behind them; feedback / feedback_wrong: outcome reports received,
    learned_threshold: the threshold calibrated from them (nan until enough feedback).

    Calibration (curator/cache/calibration.py) for the policy's max_false_hit_rate (delta):
    calibration: "off" (delta 0), "learning" (too little feedback: the policy's threshold),
    "learned", or "bound_unreachable" (no threshold holds delta on this feedback: semantic
    hits stop); feedback_served: observations at or above the learned threshold;
    false_hit_estimate: their wrong share; false_hit_bound: its one-sided 95% upper bound
    (what calibration holds to delta); supported_delta: the lowest bound any threshold
    reaches on this feedback (the smallest delta it could hold). nan where undefined.

    Per-entry thresholds (curator/cache/entry_thresholds.py), summed over the category's
    entries: entries_with_feedback, entry_feedback / entry_feedback_wrong (observations),
    entries_raised / entries_lowered (own threshold above / below the category's),
    entries_refusing (own threshold 1.0), entry_threshold_min / _max (nan: none)."""

    policy: CategoryPolicy
    threshold: float
    ttl_s: float
    pressure: float
    feedback: int = 0
    feedback_wrong: int = 0
    learned_threshold: float = math.nan
    calibration: str = "off"
    feedback_served: int = 0
    false_hit_estimate: float = math.nan
    false_hit_bound: float = math.nan
    supported_delta: float = math.nan
    entries_with_feedback: int = 0
    entry_feedback: int = 0
    entry_feedback_wrong: int = 0
    entries_raised: int = 0
    entries_lowered: int = 0
    entries_refusing: int = 0
    entry_threshold_min: float = math.nan
    entry_threshold_max: float = math.nan


@dataclass(frozen=True)
class CacheStats:
    """Semantic-cache counters: per category, outcome counters plus "entries" and "bytes";
    partitions and entries in total; models: the load of each model with a known load."""

    categories: dict[str, dict[str, int]]
    partitions: int
    entries: int
    models: dict[str, ModelLoad]
