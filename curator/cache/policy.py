"""Category policies of the semantic cache: threshold, TTL, quota, cacheability, load bounds.

A policy is looked up per (tenant, category): the tenant's own policy if it set one, else the
database-wide default set by the admin, else the built-in catalogue below. Similarities are
cosine similarities of the caller's embeddings; the catalogue's thresholds were checked on
all-MiniLM-L6-v2 embeddings of the Debian workload (bench/cache_workload.py) and are starting
points for other embedders, not constants.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from curator.errors import InvalidArgument
from curator.validation import check_name

__all__ = ["CATALOGUE", "DEFAULT_CATEGORY", "CategoryPolicy", "check_category"]

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
DEFAULT_CATEGORY = "general"


@dataclasses.dataclass(frozen=True)
class CategoryPolicy:
    """How one category of prompts is cached.

    threshold: a semantic hit needs cosine similarity >= this (at normal load).
    min_threshold: the load controller never loosens below this.
    alpha: how far the threshold drops at full model pressure (0 pins it: precision-critical).
    ttl_s: lifetime of a new entry (absolute; hits do not refresh it).
    max_ttl_s: hard staleness bound: no client TTL and no load stretch goes past it.
    beta: relative TTL stretch at full pressure (ttl * (1 + beta), capped by max_ttl_s).
    quota_entries / quota_bytes: cap of the category's entries per tenant (0 = no cap).
    floor_entries: entries of the category that the tenant-wide quota never evicts (so head
        categories cannot starve tail ones).
    cacheable: False refuses to store or serve (personal data, compliance).
    exact_only: serve only exact repeats of the normalised prompt, never semantic neighbours.
    verify: run semantic candidates through the verifier (verifier.py: a lexical guard and a
        learned head whose score, on the cosine scale, must reach the threshold).
    verify_floor: cosine below which a candidate is not verified (a clear miss stays cheap);
        with verify on, candidates from min(verify_floor, threshold) up are scored.
    max_false_hit_rate: the bound delta the threshold is calibrated to hold from feedback
        (calibration.py); 0 turns calibration off. Without feedback: `threshold` as set.
    """

    threshold: float = 0.92
    min_threshold: float = 0.88
    alpha: float = 0.02
    ttl_s: float = DAY
    max_ttl_s: float = 7 * DAY
    beta: float = 1.0
    quota_entries: int = 0
    quota_bytes: int = 0
    floor_entries: int = 100
    cacheable: bool = True
    exact_only: bool = False
    verify: bool = False
    verify_floor: float = 0.80
    max_false_hit_rate: float = 0.05

    def __post_init__(self) -> None:
        for name in ("threshold", "min_threshold", "alpha", "verify_floor"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not -1.0 <= v <= 1.0 or math.isnan(v):
                raise InvalidArgument(f"expected {name} in [-1, 1], got {v!r}")
        if self.min_threshold > self.threshold:
            raise InvalidArgument(
                f"expected min_threshold <= threshold, got {self.min_threshold} > {self.threshold}"
            )
        if self.alpha < 0:
            raise InvalidArgument(f"expected alpha >= 0, got {self.alpha}")
        for name in ("ttl_s", "max_ttl_s", "beta"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 <= v < math.inf:
                raise InvalidArgument(f"expected {name} a finite number >= 0, got {v!r}")
        if self.ttl_s <= 0 or self.ttl_s > self.max_ttl_s:
            raise InvalidArgument(
                f"expected 0 < ttl_s <= max_ttl_s, got ttl_s={self.ttl_s} "
                f"max_ttl_s={self.max_ttl_s}"
            )
        for name in ("quota_entries", "quota_bytes", "floor_entries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidArgument(f"expected {name} an integer >= 0, got {v!r}")
        for name in ("cacheable", "exact_only", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(f"expected {name} a bool, got {getattr(self, name)!r}")
        d = self.max_false_hit_rate
        if not isinstance(d, int | float) or not 0.0 <= d < 1.0:
            raise InvalidArgument(f"expected max_false_hit_rate in [0, 1), got {d!r}")

    @property
    def pinned(self) -> bool:
        """True when load never loosens the threshold."""
        return self.alpha == 0 or self.min_threshold >= self.threshold

    def effective_threshold(self, pressure: float) -> float:
        """Threshold at model pressure in [0, 1]."""
        return max(self.min_threshold, self.threshold - self.alpha * pressure)

    def effective_ttl(self, ttl_s: float, pressure: float) -> float:
        """Lifetime of an entry stored with `ttl_s`, read at model pressure in [0, 1]."""
        return min(self.max_ttl_s, ttl_s * (1.0 + self.beta * pressure))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CategoryPolicy:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidArgument(f"expected policy fields among {sorted(known)}, got {unknown}")
        return cls(**d)

    def replace(self, **changes: Any) -> CategoryPolicy:
        return self.from_json({**self.to_json(), **changes})


#: Built-in categories. Precision-critical ones (finance, health, legal) pin their threshold;
#: volatile data (finance, news) lives minutes to hours; code and docs live days.
CATALOGUE: dict[str, CategoryPolicy] = {
    DEFAULT_CATEGORY: CategoryPolicy(),
    "chat": CategoryPolicy(threshold=0.90, min_threshold=0.85, alpha=0.05, beta=1.0),
    "code": CategoryPolicy(
        threshold=0.95, min_threshold=0.93, alpha=0.02, ttl_s=7 * DAY, max_ttl_s=30 * DAY
    ),
    "docs": CategoryPolicy(
        threshold=0.93, min_threshold=0.92, alpha=0.01, ttl_s=7 * DAY, max_ttl_s=30 * DAY
    ),
    "finance": CategoryPolicy(
        threshold=0.96, min_threshold=0.96, alpha=0.0, ttl_s=5 * MINUTE, max_ttl_s=15 * MINUTE
    ),
    "health": CategoryPolicy(threshold=0.96, min_threshold=0.96, alpha=0.0, beta=0.0),
    "legal": CategoryPolicy(
        threshold=0.96, min_threshold=0.96, alpha=0.0, ttl_s=7 * DAY, max_ttl_s=30 * DAY
    ),
    "news": CategoryPolicy(
        threshold=0.92, min_threshold=0.88, alpha=0.03, ttl_s=HOUR, max_ttl_s=6 * HOUR
    ),
    "personal": CategoryPolicy(cacheable=False),
}


def check_category(name: Any) -> str:
    """A category name follows the rule for names (curator.validation.check_name)."""
    return check_name(name, "category")
