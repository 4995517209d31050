"""Results returned by the database, in-process and (identically) by the client SDK."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CacheLookup", "CacheStored", "Document", "Records", "SearchResult", "WriteResult"]

Document = bytes | str | dict | list | None


@dataclass(frozen=True)
class WriteResult:
    """seq: write sequence number of the write (durable and visible once returned);
    count: ids affected."""

    seq: int
    count: int


@dataclass
class SearchResult:
    """ids (nq, k) int64 (-1 padded), distances (nq, k) float32 (inf padded, smaller is
    closer); documents: nq lists of k payloads and vectors (nq, k, d) when asked for; seq: the
    write sequence the answer reflects."""

    ids: np.ndarray
    distances: np.ndarray
    documents: list[list[Document]] | None = None
    vectors: np.ndarray | None = None
    seq: int = 0


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
