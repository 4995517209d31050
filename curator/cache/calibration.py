"""Feedback-calibrated thresholds: each category's threshold learned to hold a false-hit bound.

Gateways report whether a served (or a scored but not served) candidate was right
(`cache_feedback`). Each (tenant, category) keeps its last `max_obs` observations (score on
the cosine scale, correct?). Its threshold is fitted on a fixed grid of candidate thresholds
(`GRID`: 0.80 to 0.99 by 0.01, 0.995, 0.999): at each, the one-sided Wilson upper bound of
the wrong share among the observations at or above it (at least `min_obs` of them), at the
level 5% / len(GRID) (Bonferroni), so that whichever grid threshold is then chosen, the
chance that its true false-hit rate exceeds delta is at most 5%; the learned threshold is the
lowest grid threshold whose bound is <= the policy's `max_false_hit_rate` (delta). Choosing
the lowest of thousands of observed scores whose plain 95% bound holds (the earlier rule) is
optimistic: one of many tests passes by chance. The fit is monotone in delta.

States (`Fit.state`): "off" (delta 0); "learning" (no grid threshold shows delta held yet: the
policy's own threshold, a conservative start, raised to just above the highest grid threshold
where the feedback shows delta broken, i.e. the observed wrong share among at least min_obs
observations exceeds it: a few right answers are no evidence against the policy, and a cache
that stopped serving after its first 30 right answers would be useless); "learned";
"bound_unreachable" (delta shown broken even at the highest grid threshold the feedback
covers: semantic hits stop, threshold 1.0, near-identical prompts only). `best_bound` says
which delta the feedback could support. What a lookup applies (`applied`): the policy's
threshold, raised above cuts shown broken, and lowered to a learned threshold once the
feedback shows delta held there. A calibrated threshold is never loosened by model load:
delta is a bound, load adaptation is a preference.

Feedback on candidates below the current threshold (exploration) is what lets the threshold
come down; feedback on hits alone can only raise it.

Observations persist in LMDB (sub-database cache_policies, keys "\\x1e" tenant "\\x1f"
category; packed float32 pairs), written back by the sweeper and at close.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics
import struct
import threading
from typing import Any

import numpy as np

from curator.storage.store import Store

__all__ = [
    "PREFIX",
    "Calibration",
    "CategoryCalibration",
    "Fit",
    "applied",
    "fit",
    "learned_threshold",
    "wilson_upper",
]

PREFIX = "\x1e"  # key prefix of calibration records among the policies
_SEP = "\x1f"
ENTRY_MARK = "\x1d"  # PREFIX + this: an entry's observations (entry_thresholds.py)
_PAIR = struct.Struct("<ff")
_Z = 1.645  # one-sided 95%
#: candidate thresholds of a category's calibration, and the bound's z over all of them
GRID = np.array([*(round(0.80 + 0.01 * i, 2) for i in range(20)), 0.995, 0.999])
Z_GRID = statistics.NormalDist().inv_cdf(1 - 0.05 / len(GRID))


def wilson_upper(wrong: np.ndarray, n: np.ndarray, z: float = _Z) -> np.ndarray:
    """Upper confidence bound of a proportion wrong/n (arrays, n > 0), one-sided at z."""
    p = wrong / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre + half) / (1 + z2 / n)


@dataclasses.dataclass(frozen=True)
class Fit:
    """A fitted threshold and the evidence behind it. threshold: None while learning (or
    off); served / wrong: observations at or above it; bound: the upper bound of their wrong
    share (nan when none); best_bound: the lowest bound at any cut with min_obs observations
    (nan when there are fewer), the smallest delta this feedback could support."""

    state: str = "off"
    threshold: float | None = None
    served: int = 0
    wrong: int = 0
    bound: float = math.nan
    best_bound: float = math.nan
    floor: float = 0.0  # just above the highest grid threshold where delta is shown broken

    @property
    def estimate(self) -> float:
        """Observed wrong share at or above the threshold (nan when nothing is)."""
        return self.wrong / self.served if self.served else math.nan


def fit(scores: np.ndarray, correct: np.ndarray, delta: float, min_obs: int) -> Fit:
    """The threshold holding `delta` on these observations (see the module docstring)."""
    if delta <= 0:
        return Fit()
    if len(scores) < min_obs:
        return Fit("learning")
    above = scores[None, :] >= GRID[:, None]  # (grid, obs)
    n = above.sum(1)
    wrong = (above & ~correct[None, :]).sum(1)
    valid = n >= min_obs
    ucb = np.full(len(GRID), np.inf)
    ucb[valid] = wilson_upper(wrong[valid].astype(np.float64), n[valid].astype(np.float64), Z_GRID)
    best = float(ucb[valid].min()) if valid.any() else math.nan
    # "shown broken": the observed wrong share above delta (min_obs observations at least)
    broken = np.flatnonzero(valid & (wrong > delta * n))
    floor = float(GRID[broken[-1] + 1]) if len(broken) and broken[-1] + 1 < len(GRID) else 0.0
    ok = np.flatnonzero(ucb <= delta)
    if len(ok):
        i = int(ok[0])  # the lowest grid threshold holding delta
        t = float(GRID[i])
        return Fit("learned", t, int(n[i]), int(wrong[i]), float(ucb[i]), best, min(floor, t))
    if not len(broken):
        return Fit("learning", None, best_bound=best)
    j = int(broken[-1])
    if j >= int(np.flatnonzero(valid)[-1]):  # broken up to the top of what feedback covers
        return Fit("bound_unreachable", 1.0, 0, 0, math.nan, best, 1.0)
    return Fit("learning", floor, int(n[j + 1]), int(wrong[j + 1]), math.nan, best, floor)


def applied(f: Fit | None, policy_threshold: float) -> float:
    """The threshold a lookup applies given a fit. The policy's stands until feedback shows
    delta broken at it (then: the floor above the broken cuts), and comes down to a learned
    threshold once feedback shows delta held there; both move one way as delta grows, so a
    looser bound never serves less."""
    if f is None or f.threshold is None:
        return policy_threshold
    kept = max(policy_threshold, f.floor)
    return min(f.threshold, kept) if f.state == "learned" else kept


def learned_threshold(
    scores: np.ndarray, correct: np.ndarray, delta: float, min_obs: int
) -> float | None:
    """The lowest observed score whose observations at or above it hold delta by the plain
    95% Wilson bound (at least min_obs of them): an entry's own cut (entry_thresholds.py),
    where a few dozen observations allow no grid correction. None when there are fewer than
    min_obs observations; 1.0 when none holds."""
    if len(scores) < min_obs or delta <= 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, wrong = scores[order], (~correct[order]).astype(np.float64)
    n = np.arange(1, len(s) + 1, dtype=np.float64)
    ok = (wilson_upper(np.cumsum(wrong), n) <= delta) & (n >= min_obs)
    ok &= np.append(s[1:] < s[:-1], True)  # only the last of a run of ties is a cut
    if not ok.any():
        return 1.0
    return float(s[np.flatnonzero(ok)[-1]])


@dataclasses.dataclass
class CategoryCalibration:
    """Observations of one (tenant, category) and their fit for `delta` (None: not yet)."""

    obs: collections.deque[tuple[float, bool]]
    fitted: Fit | None = None
    delta: float = 0.0

    @property
    def threshold(self) -> float | None:
        return None if self.fitted is None else self.fitted.threshold

    def view(self) -> dict[str, Any]:
        n = len(self.obs)
        wrong = sum(1 for _, c in self.obs if not c)
        f = self.fitted or Fit("learning" if self.delta > 0 else "off")
        return {
            "feedback": n,
            "feedback_wrong": wrong,
            "learned_threshold": math.nan if f.threshold is None else f.threshold,
            "calibration": f.state,
            "false_hit_estimate": f.estimate,
            "false_hit_bound": f.bound,
            "supported_delta": f.best_bound,
            "feedback_served": f.served,
        }


class Calibration:
    """Thread-safe store of every category's observations and learned threshold."""

    def __init__(self, store: Store, max_obs: int = 4096, min_obs: int = 30) -> None:
        self.store = store
        self.max_obs = max_obs
        self.min_obs = min_obs
        self._cats: dict[tuple[str, str], CategoryCalibration] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        with store.read() as txn:
            for k, v in store.scan_raw(txn, "cache_policies"):
                key = bytes(k).decode()
                if key.startswith(PREFIX) and not key.startswith(ENTRY_MARK, 1):
                    tenant, category = key[1:].split(_SEP, 1)
                    pairs = [_PAIR.unpack_from(v, o) for o in range(0, len(v), _PAIR.size)]
                    self._cats[(tenant, category)] = CategoryCalibration(
                        collections.deque(((s, c > 0.5) for s, c in pairs), maxlen=max_obs)
                    )

    def fit_of(self, tenant: str, category: str, delta: float) -> Fit | None:
        """The fit for `delta` (learned again first if the bound changed); None: no feedback."""
        c = self._cats.get((tenant, category))
        if c is None:
            return None
        if c.delta != delta:  # the bound changed: learn again from the same observations
            with self._lock:
                self._relearn(c, delta)
        return c.fitted

    def applied(self, tenant: str, category: str, delta: float, policy_threshold: float) -> float:
        """The threshold a lookup applies: the learned one; while learning, the policy's,
        raised to the floor where feedback shows delta broken."""
        return applied(self.fit_of(tenant, category, delta), policy_threshold)

    def record(
        self, tenant: str, category: str, score: float, correct: bool, delta: float
    ) -> CategoryCalibration:
        with self._lock:
            c = self._cats.get((tenant, category))
            if c is None:
                c = self._cats[(tenant, category)] = CategoryCalibration(
                    collections.deque(maxlen=self.max_obs)
                )
            c.obs.append((float(score), bool(correct)))
            self._relearn(c, delta)
            self._dirty.add((tenant, category))
            return c

    def _relearn(self, c: CategoryCalibration, delta: float) -> None:
        scores = np.fromiter((s for s, _ in c.obs), np.float64, len(c.obs))
        correct = np.fromiter((k for _, k in c.obs), bool, len(c.obs))
        c.fitted = fit(scores, correct, delta, self.min_obs)
        c.delta = delta

    def view(self, tenant: str, category: str, delta: float) -> dict[str, Any]:
        """The calibration state for `delta` (learned again first if the bound changed)."""
        self.fit_of(tenant, category, delta)
        c = self._cats.get((tenant, category))
        with self._lock:
            return (c or CategoryCalibration(collections.deque(), delta=delta)).view()

    def states(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(tenant, category, view) of every category with feedback, at its last delta."""
        with self._lock:
            return [(t, c, cal.view()) for (t, c), cal in self._cats.items()]

    def forget(self, tenant: str, category: str | None = None) -> None:
        """Drop the observations of a tenant (or one of its categories), durably."""
        with self._lock:
            keys = [k for k in self._cats if k[0] == tenant and category in (None, k[1])]
            for k in keys:
                del self._cats[k]
                self._dirty.discard(k)

            def txn_fn(txn: Any) -> None:
                for t, c in keys:
                    self.store.delete_key(txn, "cache_policies", PREFIX + t + _SEP + c)

            if keys and not self.store.readonly:
                self.store.write(txn_fn)

    def flush(self) -> int:
        """Write back the observations changed since the last flush; returns how many
        categories."""
        with self._lock:
            todo = [(k, list(self._cats[k].obs)) for k in self._dirty if k in self._cats]
            self._dirty.clear()
        if not todo:
            return 0

        def txn_fn(txn: Any) -> None:
            for (t, c), obs in todo:
                raw = b"".join(_PAIR.pack(s, float(k)) for s, k in obs)
                self.store.put_raw(txn, "cache_policies", (PREFIX + t + _SEP + c).encode(), raw)

        self.store.write(txn_fn)
        return len(todo)
