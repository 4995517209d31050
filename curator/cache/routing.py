"""Routing that does not split duplicates: a near-identical prompt cached under another category.

A router (the caller's or the classifier) can put two phrasings of one question into two
categories; the second then misses although its twin is cached. After a miss in its own
partition, a lookup also searches the partitions of the same tenant, model and fingerprint
under other categories, and serves an entry from one of them only when

- its cosine is at least config.route_similarity (near-identical, e.g. 0.97),
- it passes verification if either category verifies, and its score (cosine or verified)
  meets the thresholds of both categories (never a laxer policy than the request's own),
- it is alive by its own category's TTL and younger than the request category's TTL,
- the other category is cacheable and not exact-only.

Isolation is untouched: only partitions with the request's own tenant, model and fingerprint
are ever searched.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from curator.cache.candidates import Choice, choose
from curator.cache.partition import PartitionKey
from curator.cache.policy import CategoryPolicy

if TYPE_CHECKING:
    from curator.cache.semantic_cache import SemanticCache

__all__ = ["route"]


def route(
    cache: SemanticCache,
    key: PartitionKey,
    q: np.ndarray,
    prompt: str,
    policy: CategoryPolicy,
    threshold: float,
    now: float,
    pressure: float,
) -> tuple[Choice, str] | None:
    """(choice, category served from) of the best entry found across the other categories,
    or None. Caller holds the cache's read lock."""
    near = cache.config.route_similarity
    if near > 1.0:
        return None
    cats = cache.siblings.get((key.tenant, key.model, key.fingerprint), ())
    best: tuple[Choice, str] | None = None
    ttl = policy.effective_ttl(policy.ttl_s, pressure)

    def alive(e: int) -> bool:
        m = cache.ledger.get(e)
        return m is not None and now < m.created + ttl and cache._alive(e, now, pressure)

    for c in list(cats):
        if c == key.category:
            continue
        other = cache.policy(key.tenant, c)
        part = cache.partition(dataclasses.replace(key, category=c))
        if not other.cacheable or other.exact_only or part is None or part.dim != len(q):
            continue
        ids, sims = part.search(q, 1)
        if not len(sims) or sims[0] < near:
            continue
        both = max(threshold, cache.threshold(key.tenant, c, other, pressure))
        verifier = cache.verifier if policy.verify or other.verify else None
        choice = choose(
            ids,
            sims,
            threshold=both,
            verify=verifier,
            floor=both,
            alive=alive,
            prompt=prompt,
            prompt_of=cache._prompt_of,
            threshold_of=cache.entry_threshold_of(both, policy),
        )
        if choice.found is not None and (best is None or choice.found[2] > best[0].found[2]):  # type: ignore[index]
            best = (choice, c)
    return best
