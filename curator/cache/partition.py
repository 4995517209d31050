"""One cache partition: the entries of one (tenant, model, fingerprint, category), searchable
by prompt.

Isolation is structural: a lookup only ever searches the partition of its own tenant, model
and fingerprint, so another tenant's entry cannot be a candidate whatever its embedding.

Two tiers: an exact map (digest of the normalised prompt -> entry id) and a vector index over
unit-length embeddings (cosine similarity = inner product). The vector index is an exact scan
of a contiguous matrix while the partition is small (a few thousand entries scan in tens of
microseconds), and an hnswlib HNSW graph once it passes `hnsw_min` entries. Where hnswlib is
not installed (Python 3.13+: no wheel, and no compiler on the install path), partitions stay
exact scans at every size: correct, slower past ~10k entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

try:
    import hnswlib
except ImportError:  # no wheel for this Python: exact scans only (see the module docstring)
    hnswlib = None

__all__ = ["Partition", "PartitionKey", "PartitionParams", "prompt_digest"]

_SPACE = re.compile(r"\s+")


def prompt_digest(prompt: str) -> bytes:
    """16-byte digest of the prompt, normalised (case folded, whitespace collapsed)."""
    norm = _SPACE.sub(" ", prompt.casefold()).strip()
    return hashlib.blake2b(norm.encode(), digest_size=16).digest()


@dataclasses.dataclass(frozen=True)
class PartitionKey:
    """Entries are searched only among those of the same tenant, downstream model,
    fingerprint and category: another category's entry (with its own, maybe laxer,
    threshold and TTL) is never served for a prompt of this one."""

    tenant: str
    model: str
    fingerprint: str
    category: str


@dataclasses.dataclass(frozen=True)
class PartitionParams:
    """hnsw_min: entries before the exact scan turns into an HNSW graph; M, ef_construction,
    ef_search: hnswlib's graph degree, build and search list sizes."""

    hnsw_min: int = 8192
    M: int = 16
    ef_construction: int = 100
    ef_search: int = 128


class Partition:
    """Not thread-safe by itself: the cache serialises writers against readers."""

    def __init__(self, dim: int, params: PartitionParams) -> None:
        self.dim = dim
        self.params = params
        self.exact: dict[bytes, int] = {}
        self._row: dict[int, int] = {}  # entry id -> row (exact scan) or -1 (in the graph)
        self._vecs = np.zeros((16, dim), np.float32)
        self._ids = np.zeros(16, np.int64)
        self._n = 0
        self._hnsw: Any = None  # an hnswlib.Index once the partition uses a graph

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, entry_id: int) -> bool:
        return entry_id in self._row

    @property
    def uses_graph(self) -> bool:
        return self._hnsw is not None

    def add(self, entry_ids: np.ndarray, vectors: np.ndarray, digests: list[bytes]) -> None:
        """Add entries (ids (n,) int64, unit vectors (n, dim) float32); a digest already
        mapped moves to the newer entry."""
        for d, e in zip(digests, entry_ids.tolist(), strict=True):
            self.exact[d] = e
        grow = len(self) + len(entry_ids) > self.params.hnsw_min
        if self._hnsw is None and grow and hnswlib is not None:
            self._to_graph(extra=len(entry_ids))
        if self._hnsw is not None:
            idx = self._hnsw
            need = idx.get_current_count() + len(entry_ids)
            if need > idx.get_max_elements():
                idx.resize_index(max(need, 2 * idx.get_max_elements()))
            idx.add_items(vectors, entry_ids, replace_deleted=True)
            self._row.update((e, -1) for e in entry_ids.tolist())
            return
        n = len(entry_ids)
        if self._n + n > len(self._ids):
            cap = max(2 * len(self._ids), self._n + n)
            self._vecs = np.resize(self._vecs, (cap, self.dim))
            self._ids = np.resize(self._ids, cap)
        self._vecs[self._n : self._n + n] = vectors
        self._ids[self._n : self._n + n] = entry_ids
        self._row.update((e, self._n + i) for i, e in enumerate(entry_ids.tolist()))
        self._n += n

    def remove(self, entry_id: int, digest: bytes | None = None) -> bool:
        row = self._row.pop(entry_id, None)
        if row is None:
            return False
        if digest is not None and self.exact.get(digest) == entry_id:
            del self.exact[digest]
        if self._hnsw is not None:
            self._hnsw.mark_deleted(entry_id)
            return True
        last = self._n - 1  # move the last row into the hole
        if row != last:
            moved = int(self._ids[last])
            self._vecs[row] = self._vecs[last]
            self._ids[row] = moved
            self._row[moved] = row
        self._n -= 1
        return True

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` most similar entries to the unit vector q (dim,): (entry ids (m,) int64,
        cosine similarities (m,) float32), most similar first, m <= k."""
        live = len(self)
        k = min(k, live)
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if self._hnsw is None:
            sims = self._vecs[: self._n] @ q
            top = np.argpartition(-sims, k - 1)[:k] if k < self._n else np.arange(self._n)
            top = top[np.argsort(-sims[top], kind="stable")]
            return self._ids[top], np.minimum(sims[top], 1.0)
        while True:
            try:
                labels, dist = self._hnsw.knn_query(q, k=k)
                break
            except RuntimeError:  # too few live neighbours reachable for k (deleted nodes)
                if k == 1:
                    return np.empty(0, np.int64), np.empty(0, np.float32)
                k = max(1, k // 2)
        return labels[0].astype(np.int64), np.minimum(1.0 - dist[0], 1.0).astype(np.float32)

    def _to_graph(self, extra: int) -> None:
        p = self.params
        idx = hnswlib.Index(space="ip", dim=self.dim)
        idx.init_index(
            max_elements=max(2 * (self._n + extra), 1024),
            M=p.M,
            ef_construction=p.ef_construction,
            allow_replace_deleted=True,
        )
        idx.set_ef(p.ef_search)  # >= the cache's candidates (CacheConfig.partition_params)
        if self._n:
            idx.add_items(self._vecs[: self._n], self._ids[: self._n])
        self._row = dict.fromkeys(self._row, -1)
        self._hnsw = idx
        self._vecs = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._n = 0

    def save_graph(self, path: Path) -> bool:
        """Write the HNSW graph (if the partition has one) to `path`, atomically."""
        if self._hnsw is None:
            return False
        tmp = path.with_name(path.name + ".tmp")
        self._hnsw.save_index(str(tmp))
        os.replace(tmp, path)
        return True

    @classmethod
    def from_graph(
        cls, path: Path, dim: int, params: PartitionParams, live: dict[int, bytes]
    ) -> tuple[Partition, list[int]]:
        """A partition on the graph saved at `path`, reconciled with its live entries (id ->
        prompt digest): graph nodes no longer live are marked deleted. Returns the partition
        and the live ids the graph lacks (stored after it was saved): the caller adds them.
        Raises ValueError when the file is not a graph of this dimension, or when hnswlib is
        not installed (the caller then rebuilds the partition from its entries)."""
        if hnswlib is None:
            raise ValueError(f"cannot load graph {path}: hnswlib is not installed")
        idx = hnswlib.Index(space="ip", dim=dim)
        try:
            idx.load_index(str(path), allow_replace_deleted=True)
        except RuntimeError as e:
            raise ValueError(f"unreadable graph {path}: {e}") from None
        if idx.dim != dim:
            raise ValueError(f"graph {path} has dimension {idx.dim}, expected {dim}")
        idx.set_ef(params.ef_search)
        in_graph = set(idx.get_ids_list())
        for label in in_graph.difference(live):
            try:
                idx.mark_deleted(label)
            except RuntimeError:  # deleted before the save already
                pass
        part = cls(dim, params)
        part._hnsw = idx
        part._vecs = np.zeros((0, dim), np.float32)
        part._ids = np.zeros(0, np.int64)
        present = [i for i in live if i in in_graph]
        part._row = dict.fromkeys(present, -1)
        part.exact = {live[i]: i for i in present}
        return part, [i for i in live if i not in in_graph]
