"""What `cache_policies` and the metrics show of each category: its policy, the threshold in
force and its learned state (category calibration, calibration.py; per-entry thresholds,
entry_thresholds.py).

The metrics page names no tenant and no entry: `calibration_summary` sums every tenant's
state per category (the metrics module folds categories that are not built in into "other").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from curator.errors import NotFound
from curator.results import PolicyState

if TYPE_CHECKING:
    from curator.cache.semantic_cache import SemanticCache

__all__ = ["STATES", "calibration_summary", "policy_states"]

#: Calibration states (calibration.Fit.state).
STATES = ("off", "learning", "learned", "bound_unreachable")

_CALIBRATION = (
    "calibration",
    "feedback_served",
    "false_hit_estimate",
    "false_hit_bound",
    "supported_delta",
)


def policy_states(cache: SemanticCache, tenant: str, model: str = "") -> dict[str, PolicyState]:
    """Every category of the tenant ("": the database-wide defaults); see PolicyState."""
    pressure = cache.load.pressure(model) if model else 0.0
    out = {}
    bases: dict[Hashable, tuple[float, float]] = {}
    for c in cache.categories.names(tenant):
        p = cache.policy(tenant, c)
        threshold = cache.threshold(tenant, c, p, pressure)
        bases[c] = (threshold, p.max_false_hit_rate)
        cal = cache.calibration.view(tenant, c, p.max_false_hit_rate)
        out[c] = PolicyState(
            p,
            threshold,
            p.effective_ttl(p.ttl_s, pressure),
            pressure,
            int(cal["feedback"]),
            int(cal["feedback_wrong"]),
            float(cal["learned_threshold"]),
            **{k: cal[k] for k in _CALIBRATION},
        )

    def group_of(entry_id: int) -> Hashable | None:
        m = cache.ledger.get(entry_id)
        if m is None or m.key.tenant != tenant or m.category not in bases:
            return None
        return m.category

    entries = cache.entry_thresholds.summary(group_of, lambda g: bases[g])
    for g, d in entries.items():
        c = str(g)
        fields: dict[str, Any] = {
            k: (v if k.startswith("entry_threshold") else int(v)) for k, v in d.items()
        }
        out[c] = dataclasses.replace(out[c], **fields)
    return out


def calibration_summary(cache: SemanticCache) -> dict[str, dict[str, Any]]:
    """Per category, summed over tenants: how many (tenant, category) calibrations are in
    each state (`states`), their observations (feedback, feedback_wrong), the range of their
    learned thresholds and false-hit bounds (nan: none learned), and the per-entry summary
    (entry_thresholds.summary) summed likewise."""
    out: dict[str, dict[str, Any]] = {}

    def cat(name: str) -> dict[str, Any]:
        d = out.get(name)
        if d is None:
            d = out[name] = {
                "states": dict.fromkeys(STATES, 0),
                "feedback": 0,
                "feedback_wrong": 0,
                "learned_threshold_min": math.nan,
                "learned_threshold_max": math.nan,
                "false_hit_bound_max": math.nan,
                "entries_with_feedback": 0,
                "entry_feedback": 0,
                "entry_feedback_wrong": 0,
                "entries_raised": 0,
                "entries_lowered": 0,
                "entries_refusing": 0,
            }
        return d

    for _, c, v in cache.calibration.states():
        d = cat(c)
        d["states"][v["calibration"]] = d["states"].get(v["calibration"], 0) + 1
        d["feedback"] += v["feedback"]
        d["feedback_wrong"] += v["feedback_wrong"]
        if v["calibration"] == "learned":
            t, b = v["learned_threshold"], v["false_hit_bound"]
            d["learned_threshold_min"] = _fmin(d["learned_threshold_min"], t)
            d["learned_threshold_max"] = _fmax(d["learned_threshold_max"], t)
            d["false_hit_bound_max"] = _fmax(d["false_hit_bound_max"], b)

    bases: dict[Hashable, tuple[float, float]] = {}

    def group_of(entry_id: int) -> Hashable | None:
        m = cache.ledger.get(entry_id)
        if m is None:
            return None
        g = (m.key.tenant, m.category)
        if g not in bases:
            try:
                p = cache.policy(*g)
            except NotFound:  # a policy dropped since: not shown
                return None
            bases[g] = (cache.threshold(m.key.tenant, m.category, p, 0.0), p.max_false_hit_rate)
        return g

    for g, e in cache.entry_thresholds.summary(group_of, lambda g: bases[g]).items():
        d = cat(g[1])  # type: ignore[index]
        for k, n in e.items():
            if not k.startswith("entry_threshold"):
                d[k] += int(n)
    return out


def _fmin(a: float, b: float) -> float:
    return b if math.isnan(a) else min(a, b)


def _fmax(a: float, b: float) -> float:
    return b if math.isnan(a) else max(a, b)
