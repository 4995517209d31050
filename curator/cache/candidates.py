"""Choosing the entry a semantic lookup serves among a partition's nearest candidates.

Without verification: the most similar unexpired candidate at or above the threshold (the
candidates come most similar first). With verification (policy.verify): every unexpired
candidate at or above the pre-threshold min(verify_floor, threshold) is verified and the best
score at or above the threshold wins. A candidate below the pre-threshold costs nothing more
than the vector search, so a clear miss stays as cheap as without a verifier.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from curator.cache.verifier import Verifier

__all__ = ["Choice", "choose"]


@dataclasses.dataclass
class Choice:
    """found: (entry id, cosine, score) served, or None; reason: why not; best: the best
    cosine seen; scored: (entry id, cosine, score) of the best verified or compared candidate
    (for feedback), or None."""

    found: tuple[int, float, float] | None = None
    reason: str = "below_threshold"
    best: float = math.nan
    scored: tuple[int, float, float] | None = None


def choose(
    ids: np.ndarray,
    sims: np.ndarray,
    *,
    threshold: float,
    verify: Verifier | None,
    floor: float,
    alive: Callable[[int], bool],
    prompt: str,
    prompt_of: Callable[[int], str | None],
    threshold_of: Callable[[int], float] | None = None,
) -> Choice:
    """Pick among candidates (ids (k,), cosines (k,) most similar first). `verify` None:
    cosine only; else candidates from min(floor, threshold) up are verified against `prompt`
    (their own prompts read with `prompt_of`). Either way the best candidate from that floor
    up is reported in `scored`, so that feedback can explore below the threshold.
    `threshold_of(entry id)`: the entry's own threshold (entry_thresholds.py), None: every
    entry has `threshold`; the best score among candidates meeting their own wins."""
    out = Choice(best=float(sims[0]) if len(sims) else math.nan)
    low = min(floor, threshold)
    vetoed = False
    for e, s in zip(ids.tolist(), sims.tolist(), strict=True):
        if s < low:
            break
        if not alive(e):
            if s >= threshold:
                out.reason = "expired"
            continue
        t = threshold if threshold_of is None else threshold_of(e)
        if verify is None:  # most similar first: the first that meets its threshold decides
            if out.scored is None or s >= t:
                out.scored = (e, s, s)
            if s >= t:
                out.found = out.scored
                return out
            if threshold_of is None:
                return out
            continue
        cached = prompt_of(e)
        if cached is None:  # deleted since the search
            continue
        v = verify.verify(prompt, cached, s)
        if v.veto is not None:
            vetoed = True
            continue
        if v.score >= t and (out.found is None or v.score > out.found[2]):
            out.found = (e, s, v.score)
        if out.scored is None or v.score > out.scored[2]:
            out.scored = (e, s, v.score)
    if out.found is not None:
        out.scored = out.found
    elif out.scored is None and vetoed and out.reason != "expired":
        out.reason = "vetoed"
    return out
