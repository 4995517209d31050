"""Per-entry thresholds learned from feedback (vCache-style): each cached entry its own cut.

Correct and wrong hits overlap in similarity, and where they overlap differs per entry: a
templated question ("rehab center in X County") has near-misses at 0.97 while another entry
has none below 0.85. So each entry keeps its last `max_obs` feedback observations (score on
the cosine scale, correct?) and its threshold is:

- no feedback: the category's threshold in force (a conservative start, `base`);
- fewer than `min_obs` observations: the category's threshold, raised just above the highest
  score at which the entry was judged wrong (one wrong answer at 0.95 means that this entry
  must not serve at 0.95 again); correct observations alone never lower it;
- `min_obs` observations or more: the entry's own calibrated cut, the lowest score whose
  observations at or above it hold the category's bound delta by the one-sided 95% Wilson
  bound (calibration.learned_threshold); below the category's threshold only on that much
  evidence of the entry's own.

Observations persist in LMDB (sub-database cache_policies, keys calibration.PREFIX + "\\x1d"
+ the entry id; packed float32 pairs), written back by the sweeper and at close; a deleted
entry's record goes at the next write-back.
"""

from __future__ import annotations

import collections
import math
import struct
import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from curator.cache.calibration import ENTRY_MARK, PREFIX, learned_threshold
from curator.storage.store import Store

__all__ = ["ENTRY_PREFIX", "EntryThresholds", "entry_threshold"]

ENTRY_PREFIX = PREFIX + ENTRY_MARK
_PAIR = struct.Struct("<ff")
MARGIN = 1e-4  # above a wrong observation's score: a strict inequality on the cosine scale


def entry_threshold(
    scores: np.ndarray, correct: np.ndarray, base: float, delta: float, min_obs: int
) -> float:
    """The threshold of one entry with these observations (see the module docstring)."""
    if len(scores) == 0:
        return base
    own = learned_threshold(scores, correct, delta, min_obs) if delta > 0 else None
    if own is not None:
        return own
    wrong = scores[~correct]
    if len(wrong) == 0:
        return base
    return max(base, min(1.0, float(wrong.max()) + MARGIN))


_SUMMED = (
    "entries_with_feedback",
    "entry_feedback",
    "entry_feedback_wrong",
    "entries_raised",
    "entries_lowered",
    "entries_refusing",
)


def _key(entry_id: int) -> bytes:
    return (ENTRY_PREFIX + str(entry_id)).encode()


class EntryThresholds:
    """Thread-safe observations of every entry with feedback, by entry id."""

    def __init__(self, store: Store, max_obs: int = 64, min_obs: int = 30) -> None:
        if max_obs < min_obs:
            raise ValueError(f"expected max_obs >= min_obs, got {max_obs} < {min_obs}")
        self.store = store
        self.max_obs = max_obs
        self.min_obs = min_obs
        self._obs: dict[int, collections.deque[tuple[float, bool]]] = {}
        self._dirty: set[int] = set()
        self._gone: set[int] = set()
        # entry id -> (version, base, delta, threshold): thresholds only change with feedback
        # (each record bumps the version, so a threshold computed from older observations,
        # racing a record, is never served from the memo)
        self._memo: dict[int, tuple[int, float, float, float]] = {}
        self._version = 0
        self._lock = threading.Lock()
        prefix = ENTRY_PREFIX.encode()
        with store.read() as txn:
            for k, v in store.scan_raw(txn, "cache_policies"):
                k = bytes(k)
                if k.startswith(prefix):
                    pairs = [_PAIR.unpack_from(v, o) for o in range(0, len(v), _PAIR.size)]
                    self._obs[int(k[len(prefix) :])] = collections.deque(
                        ((s, c > 0.5) for s, c in pairs), maxlen=max_obs
                    )

    def __len__(self) -> int:
        return len(self._obs)

    def has_feedback(self) -> bool:
        return bool(self._obs)

    def threshold(self, entry_id: int, base: float, delta: float) -> float:
        """The entry's threshold given the category's `base` threshold in force."""
        obs = self._obs.get(entry_id)
        if obs is None:
            return base
        memo = self._memo.get(entry_id)
        if memo is not None and memo[1] == base and memo[2] == delta:
            return memo[3]
        with self._lock:
            pairs, version = list(obs), self._version
        scores = np.fromiter((s for s, _ in pairs), np.float64, len(pairs))
        correct = np.fromiter((c for _, c in pairs), bool, len(pairs))
        t = entry_threshold(scores, correct, base, delta, self.min_obs)
        with self._lock:
            if version == self._version:  # no record since the snapshot
                self._memo[entry_id] = (version, base, delta, t)
        return t

    def record(self, entry_id: int, score: float, correct: bool) -> None:
        if not math.isfinite(score):
            return
        with self._lock:
            obs = self._obs.get(entry_id)
            if obs is None:
                obs = self._obs[entry_id] = collections.deque(maxlen=self.max_obs)
            obs.append((float(score), bool(correct)))
            self._version += 1
            self._memo.pop(entry_id, None)
            self._dirty.add(entry_id)
            self._gone.discard(entry_id)

    def view(self, entry_id: int, base: float, delta: float) -> dict[str, Any]:
        """feedback / feedback_wrong of the entry and its threshold now."""
        with self._lock:
            pairs = list(self._obs.get(entry_id, ()))
        return {
            "entry_feedback": len(pairs),
            "entry_feedback_wrong": sum(1 for _, c in pairs if not c),
            "entry_threshold": self.threshold(entry_id, base, delta),
        }

    def summary(
        self,
        group_of: Callable[[int], Hashable | None],
        base_of: Callable[[Hashable], tuple[float, float]],
    ) -> dict[Hashable, dict[str, float]]:
        """Per group (e.g. (tenant, category); `group_of(entry id)`, None: skip the entry) of
        the entries with feedback: how many, their observations and wrong ones, how many
        have their own threshold above / below the group's base or at 1.0, and the range of
        their thresholds. `base_of(group)` -> (the group's threshold, its delta)."""
        with self._lock:
            todo = [(i, len(o), sum(1 for _, c in o if not c)) for i, o in self._obs.items()]
        out: dict[Hashable, dict[str, float]] = {}
        for i, n, wrong in todo:
            g = group_of(i)
            if g is None:
                continue
            base, delta = base_of(g)
            t = self.threshold(i, base, delta)
            d = out.get(g)
            if d is None:
                d = out[g] = dict.fromkeys(_SUMMED, 0.0)
                d.update(entry_threshold_min=t, entry_threshold_max=t)
            d["entries_with_feedback"] += 1
            d["entry_feedback"] += n
            d["entry_feedback_wrong"] += wrong
            d["entries_raised"] += t > base
            d["entries_lowered"] += t < base
            d["entries_refusing"] += t >= 1.0
            d["entry_threshold_min"] = min(d["entry_threshold_min"], t)
            d["entry_threshold_max"] = max(d["entry_threshold_max"], t)
        return out

    def forget(self, ids: list[int]) -> None:
        """Drop deleted entries' observations (their records go at the next flush)."""
        with self._lock:
            for i in ids:
                self._memo.pop(i, None)
                if self._obs.pop(i, None) is not None:
                    self._gone.add(i)
                    self._dirty.discard(i)

    def keep_only(self, live: set[int] | dict[int, Any]) -> None:
        """At start-up: forget observations of entries that no longer exist."""
        self.forget([i for i in list(self._obs) if i not in live])

    def flush(self) -> int:
        """Write back changed observations and delete gone ones; returns how many records."""
        with self._lock:
            todo = [(i, list(self._obs[i])) for i in self._dirty if i in self._obs]
            gone = list(self._gone)
            self._dirty.clear()
            self._gone.clear()
        if not todo and not gone:
            return 0

        def txn_fn(txn: Any) -> None:
            for i in gone:
                self.store.delete_raw(txn, "cache_policies", _key(i))
            for i, obs in todo:
                raw = b"".join(_PAIR.pack(s, float(c)) for s, c in obs)
                self.store.put_raw(txn, "cache_policies", _key(i), raw)

        self.store.write(txn_fn, frees=bool(gone) and not todo)
        return len(todo) + len(gone)
