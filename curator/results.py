"""Results returned by the database, in-process and (identically) by the client SDK."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Document", "Records", "SearchResult", "WriteResult"]

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
