"""Settings of the semantic cache (a frozen dataclass; the server reads CURATOR_CACHE_*)."""

from __future__ import annotations

import dataclasses

from curator.cache.load import LoadConfig
from curator.cache.partition import PartitionParams
from curator.errors import InvalidArgument

__all__ = ["CacheConfig"]


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """candidates: neighbours the semantic tier examines (k > 1: the nearest may be expired).
    hnsw_*: a partition turns from an exact scan into an HNSW graph past hnsw_min entries;
        hnsw_ef_search 64: a clear miss at 100k entries 0.66 ms vs 1.18 ms at 128, with every
        reworded prompt (cosine 0.97) still finding its own entry (bench/RESULTS.md §9).
    tenant_max_entries / tenant_max_bytes: a tenant's quota over all its categories (0 = none;
        default 1M entries and 1 GiB of prompts, responses and embeddings): past it the
        tenant's least useful entries are evicted (eviction.py), not other tenants'.
    max_prompt_bytes / max_response_bytes: request limits (ResourceExhausted past them).
    pending_ttl_s: a single-flight slot is given up if its leader has not stored by then.
    sweep_every_s: background expiry sweep and hit-count write-back (0 = no thread).
    evict_slack: a full quota evicts this fraction more, so eviction runs rarely.
    classifier_min_similarity: below it a prompt gets the default category.
    max_wait_s: cap on a lookup's wait_s for a pending prompt (longer waits are cut to it).
    route_similarity: a lookup that misses in its own category also serves a near-identical
        prompt (cosine >= this, verified if either category verifies) cached under another
        category of the same tenant, model and fingerprint, if it meets both categories'
        thresholds and TTLs; > 1 turns routing off.
    feedback_window: lookups remembered for `feedback` (the oldest are forgotten first).
    calibration_min_obs: feedback observations a category needs before its threshold is
        learned from them (calibration.py).
    embedder: "" (callers send embeddings) or "all-MiniLM-L6-v2" (the embed extra): the server
        embeds prompts sent without an embedding.
    pair_model: "" or a directory holding a pair-scoring model (cross-encoder, the rerank
        extra; pair_model.py): verifying categories then ask it about candidates whose
        lexical score reaches pair_pre_threshold.
    load_*: the load controller (curator/cache/load.py)."""

    candidates: int = 4
    hnsw_min: int = 8192
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 64
    tenant_max_entries: int = 1_000_000
    tenant_max_bytes: int = 1 << 30
    max_prompt_bytes: int = 64 << 10
    max_response_bytes: int = 4 << 20
    pending_ttl_s: float = 30.0
    sweep_every_s: float = 30.0
    evict_slack: float = 0.02
    classifier_min_similarity: float = 0.3
    load_enter: float = 0.85
    load_exit: float = 0.6
    load_smoothing: float = 0.5
    load_report_ttl_s: float = 30.0
    load_window_s: float = 10.0
    max_wait_s: float = 30.0
    route_similarity: float = 0.97
    feedback_window: int = 65536
    calibration_min_obs: int = 30
    embedder: str = ""
    pair_model: str = ""
    pair_pre_threshold: float = 0.85

    def __post_init__(self) -> None:
        if not 1 <= self.candidates <= 256:
            raise InvalidArgument(f"expected candidates in [1, 256], got {self.candidates}")
        if not 0 <= self.max_wait_s <= 600:
            raise InvalidArgument(f"expected max_wait_s in [0, 600], got {self.max_wait_s}")
        if not 0 < self.route_similarity:
            raise InvalidArgument(f"expected route_similarity > 0, got {self.route_similarity}")
        if self.feedback_window < 1 or self.calibration_min_obs < 1:
            raise InvalidArgument(
                "expected feedback_window and calibration_min_obs >= 1, got "
                f"{self.feedback_window} and {self.calibration_min_obs}"
            )
        if not -1.0 <= self.pair_pre_threshold <= 1.0:
            raise InvalidArgument(
                f"expected pair_pre_threshold in [-1, 1], got {self.pair_pre_threshold}"
            )
        if not 0 <= self.evict_slack < 1:
            raise InvalidArgument(f"expected evict_slack in [0, 1), got {self.evict_slack}")

    def partition_params(self) -> PartitionParams:
        return PartitionParams(
            self.hnsw_min,
            self.hnsw_m,
            self.hnsw_ef_construction,
            max(self.hnsw_ef_search, self.candidates),
        )

    def load_config(self) -> LoadConfig:
        return LoadConfig(
            self.load_enter,
            self.load_exit,
            self.load_smoothing,
            self.load_report_ttl_s,
            self.load_window_s,
        )
