"""TEMPORARY stand-in for the cache contract until main's cache lands (deleted after merge)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class CacheLookup:
    hit: bool
    reason: str
    response: bytes | None = None
    similarity: float = 0.0
    entry_id: int = 0
    category: str = "default"
    category_source: str = "default"
    threshold: float = 0.8
    leader: bool = False


@dataclasses.dataclass(frozen=True)
class CacheStored:
    entry_id: int
    expires_at: float
    evicted: int = 0


class FakeCache:
    def __init__(self) -> None:
        self.entries: dict[int, dict[str, Any]] = {}
        self.next = 1

    def cache_lookup(
        self, prompt, embedding, *, tenant, model, fingerprint="", category=None, wait_s=0.0
    ):
        cat = category or "default"
        best, best_s = None, -1.0
        q = np.asarray(embedding, np.float32)
        for eid, e in self.entries.items():
            if (e["tenant"], e["model"], e["fp"], e["cat"]) != (tenant, model, fingerprint, cat):
                continue
            if e["exp"] < time.time():
                continue
            if e["prompt"] == prompt:
                return CacheLookup(True, "exact", e["resp"], 1.0, eid, cat)
            s = float(q @ e["vec"])
            if s > best_s:
                best, best_s = eid, s
        if best is not None and best_s >= 0.8:
            return CacheLookup(True, "semantic", self.entries[best]["resp"], best_s, best, cat)
        return CacheLookup(
            False,
            "empty" if best is None else "below_threshold",
            None,
            max(best_s, 0.0),
            0,
            cat,
            leader=True,
        )

    def cache_store(
        self,
        prompt,
        embedding,
        response,
        *,
        tenant,
        model,
        fingerprint="",
        category=None,
        ttl_s=None,
        latency_s=0.0,
        tokens=0,
    ):
        eid = self.next
        self.next += 1
        resp = response.encode() if isinstance(response, str) else bytes(response)
        exp = time.time() + (ttl_s if ttl_s is not None else 3600)
        self.entries[eid] = dict(
            tenant=tenant,
            model=model,
            fp=fingerprint,
            cat=category or "default",
            prompt=prompt,
            vec=np.asarray(embedding, np.float32),
            resp=resp,
            exp=exp,
        )
        return CacheStored(eid, exp)

    def cache_invalidate(self, *, tenant, category=None, model=None, fingerprint=None):
        gone = [
            k
            for k, e in self.entries.items()
            if e["tenant"] == tenant
            and category in (None, e["cat"])
            and model in (None, e["model"])
            and fingerprint in (None, e["fp"])
        ]
        for k in gone:
            del self.entries[k]
        return len(gone)
