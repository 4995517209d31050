"""Results returned by the database, in-process and (identically) by the client SDK."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "NO_ID",
    "CacheLookup",
    "CacheStored",
    "Document",
    "Records",
    "SearchResult",
    "WriteResult",
]

Document = bytes | str | dict | list | None

#: Padding of search result ids (2**64 - 1, an id no vector may have; -1 as int64 bits).
NO_ID = np.uint64(2**64 - 1)


@dataclass(frozen=True)
class WriteResult:
    """seq: write sequence number of the write (durable and visible once returned);
    count: ids affected; tenant_seq: the acting tenant's own write counter after this write
    (what a tenant key is shown as `seq`: the database-wide number would reveal other
    tenants' writes; 0 for the admin)."""

    seq: int
    count: int
    tenant_seq: int = 0


@dataclass
class SearchResult:
    """ids (nq, k) uint64 (padded with NO_ID), distances (nq, k) float32 (inf padded,
    smaller is closer); documents: nq lists of k payloads and vectors (nq, k, d) when asked
    for; seq: the write sequence the answer reflects; owners: nq lists of k owner tenant
    names ("" for padding): ids are scoped per owner, so (owner, id) names a vector."""

    ids: np.ndarray
    distances: np.ndarray
    documents: list[list[Document]] | None = None
    vectors: np.ndarray | None = None
    seq: int = 0
    owners: list[list[str]] | None = None

    @property
    def found(self) -> np.ndarray:
        """(nq, k) bool: which entries are hits (not padding)."""
        return np.asarray(self.ids) != NO_ID


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
    "not_cacheable" (the category's policy), "pending" (another caller is generating this
    prompt: wait and look up again, or call the model). similarity: cosine similarity of the
    best candidate (nan if none); threshold: the one applied (load-adjusted); category and
    category_source ("caller", "classifier" or "default"); leader: on a miss, this caller
    holds the single-flight slot for the prompt and is expected to store the answer; age_s:
    age of the entry served."""

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


@dataclass(frozen=True)
class CacheStored:
    """Answer of a cache store: entry_id (0 when not stored), expires_at (unix seconds),
    evicted: entries removed to make room; stored: False when the category is not cacheable."""

    entry_id: int
    expires_at: float
    evicted: int
    stored: bool = True
