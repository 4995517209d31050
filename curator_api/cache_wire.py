"""Semantic-cache messages on the wire: policies, lookups, feedback, stores, model load and
stats (both directions; the server and both SDKs use these)."""

from __future__ import annotations

import dataclasses
from typing import Any

from curator.cache.policy import CategoryPolicy
from curator.results import (
    CacheLookup,
    CacheStats,
    CacheStored,
    ModelLoad,
    PolicyState,
)
from curator_api.v1 import curator_pb2 as pb

__all__ = [
    "cache_stats_from_pb",
    "cache_stats_to_pb",
    "feedback_from_pb",
    "feedback_to_pb",
    "lookup_from_pb",
    "lookup_to_pb",
    "model_load_from_pb",
    "model_load_to_pb",
    "policies_from_pb",
    "policies_to_pb",
    "policy_fields_from_pb",
    "policy_from_pb",
    "policy_to_pb",
    "stored_from_pb",
    "stored_to_pb",
]


# -- semantic cache ----------------------------------------------------------------------------
_POLICY_FIELDS = (
    "threshold",
    "min_threshold",
    "alpha",
    "ttl_s",
    "max_ttl_s",
    "beta",
    "quota_entries",
    "quota_bytes",
    "floor_entries",
    "cacheable",
    "exact_only",
    "verify",
    "verify_floor",
    "max_false_hit_rate",
)


def policy_to_pb(p: CategoryPolicy) -> pb.CachePolicy:
    return pb.CachePolicy(**{f: getattr(p, f) for f in _POLICY_FIELDS})


def policy_fields_from_pb(m: pb.CachePolicy) -> dict[str, Any]:
    """The fields set in a CachePolicy message (a partial update)."""
    return {f: getattr(m, f) for f in _POLICY_FIELDS if m.HasField(f)}


def policy_from_pb(m: pb.CachePolicy) -> CategoryPolicy:
    return CategoryPolicy.from_json(policy_fields_from_pb(m))


def lookup_to_pb(r: CacheLookup) -> pb.CacheLookupResponse:
    return pb.CacheLookupResponse(
        hit=r.hit,
        reason=r.reason,
        response=r.response or b"",
        similarity=r.similarity,
        entry_id=r.entry_id,
        category=r.category,
        category_source=r.category_source,
        threshold=r.threshold,
        leader=r.leader,
        age_s=r.age_s,
        lookup_id=r.lookup_id,
        score=r.score,
        routed_from=r.routed_from,
    )


def lookup_from_pb(m: pb.CacheLookupResponse) -> CacheLookup:
    return CacheLookup(
        hit=m.hit,
        reason=m.reason,
        response=bytes(m.response) if m.hit else None,
        similarity=m.similarity,
        entry_id=m.entry_id,
        category=m.category,
        category_source=m.category_source,
        threshold=m.threshold,
        leader=m.leader,
        age_s=m.age_s,
        lookup_id=m.lookup_id,
        score=m.score,
        routed_from=m.routed_from,
    )


_CALIBRATION = ("feedback_served", "false_hit_estimate", "false_hit_bound", "supported_delta")
#: PolicyState's per-entry summary fields <-> EntryThresholdSummary's
_ENTRIES = {
    "entries_with_feedback": "entries_with_feedback",
    "entry_feedback": "feedback",
    "entry_feedback_wrong": "feedback_wrong",
    "entries_raised": "raised",
    "entries_lowered": "lowered",
    "entries_refusing": "refusing",
    "entry_threshold_min": "threshold_min",
    "entry_threshold_max": "threshold_max",
}


def _calibration_to_pb(d: Any) -> pb.CalibrationState:
    """From a feedback dict or a PolicyState (the same names)."""
    get = d.get if isinstance(d, dict) else lambda k: getattr(d, k)
    return pb.CalibrationState(state=get("calibration"), **{k: get(k) for k in _CALIBRATION})


def _calibration_from_pb(m: pb.CalibrationState) -> dict[str, Any]:
    return {"calibration": m.state, **{k: getattr(m, k) for k in _CALIBRATION}}


def feedback_to_pb(d: dict[str, Any]) -> pb.CacheFeedbackResponse:
    return pb.CacheFeedbackResponse(
        category=d["category"],
        feedback=d["feedback"],
        feedback_wrong=d["feedback_wrong"],
        learned_threshold=d["learned_threshold"],
        calibration=_calibration_to_pb(d),
        entry_feedback=d["entry_feedback"],
        entry_feedback_wrong=d["entry_feedback_wrong"],
        entry_threshold=d["entry_threshold"],
    )


def feedback_from_pb(m: pb.CacheFeedbackResponse) -> dict[str, Any]:
    return {
        "category": m.category,
        "feedback": m.feedback,
        "feedback_wrong": m.feedback_wrong,
        "learned_threshold": m.learned_threshold,
        **_calibration_from_pb(m.calibration),
        "entry_feedback": m.entry_feedback,
        "entry_feedback_wrong": m.entry_feedback_wrong,
        "entry_threshold": m.entry_threshold,
    }


def stored_to_pb(r: CacheStored) -> pb.CacheStoreResponse:
    return pb.CacheStoreResponse(
        entry_id=r.entry_id, expires_at=r.expires_at, evicted=r.evicted, stored=r.stored
    )


def stored_from_pb(m: pb.CacheStoreResponse) -> CacheStored:
    return CacheStored(m.entry_id, m.expires_at, m.evicted, m.stored)


def model_load_to_pb(model: str, m: ModelLoad) -> pb.ModelLoad:
    return pb.ModelLoad(model=model, **dataclasses.asdict(m))


def model_load_from_pb(m: pb.ModelLoad) -> ModelLoad:
    return ModelLoad(m.load, m.overloaded, m.pressure, m.source, m.capacity_rps)


def policies_to_pb(policies: dict[str, PolicyState]) -> pb.GetCachePoliciesResponse:
    return pb.GetCachePoliciesResponse(
        categories=[
            pb.CategoryState(
                category=c,
                policy=policy_to_pb(st.policy),
                threshold=st.threshold,
                ttl_s=st.ttl_s,
                pressure=st.pressure,
                feedback=st.feedback,
                feedback_wrong=st.feedback_wrong,
                learned_threshold=st.learned_threshold,
                calibration=_calibration_to_pb(st),
                entries=pb.EntryThresholdSummary(
                    **{w: getattr(st, f) for f, w in _ENTRIES.items()}
                ),
            )
            for c, st in policies.items()
        ]
    )


def policies_from_pb(m: pb.GetCachePoliciesResponse) -> dict[str, PolicyState]:
    return {
        s.category: PolicyState(
            policy_from_pb(s.policy),
            s.threshold,
            s.ttl_s,
            s.pressure,
            s.feedback,
            s.feedback_wrong,
            s.learned_threshold,
            **_calibration_from_pb(s.calibration),
            **{f: getattr(s.entries, w) for f, w in _ENTRIES.items()},
        )
        for s in m.categories
    }


def cache_stats_to_pb(stats: CacheStats) -> pb.CacheStatsResponse:
    out = pb.CacheStatsResponse(entries=stats.entries, partitions=stats.partitions)
    for c, counters in stats.categories.items():
        out.categories[c].counters.update(counters)
    out.models.extend(model_load_to_pb(m, x) for m, x in stats.models.items())
    return out


def cache_stats_from_pb(m: pb.CacheStatsResponse) -> CacheStats:
    return CacheStats(
        categories={c: dict(v.counters) for c, v in m.categories.items()},
        partitions=m.partitions,
        entries=m.entries,
        models={x.model: model_load_from_pb(x) for x in m.models},
    )
