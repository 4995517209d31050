"""Chroma (PersistentClient, in-process), with the tenant as metadata and a `where` filter at
query time, the way Chroma documents filtered search. One tenant per vector: a string field
(`{"tenant": "t3"}`); shared vectors: a string-array field matched with `$contains`.
`embedding_function=None`: the vectors are given, nothing is downloaded."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bench.datasets import Dataset
from bench.peers.base import Peer, tenant_key

__all__ = ["Chroma"]

ADD_CHUNK = 5000


class Chroma(Peer):
    name = "chroma"
    settings: ClassVar[list[dict[str, Any]]] = [{"ef_search": ef} for ef in (16, 32, 64, 128, 256)]

    def __init__(self, root: str | None = None) -> None:
        import chromadb

        self.chromadb = chromadb
        super().__init__(root)

    def _meta(self, ts: np.ndarray) -> dict[str, Any]:
        if self.shared:
            return {"tenants": [tenant_key(t) for t in ts]}
        return {"tenant": tenant_key(ts[0])}

    def build(self, ds: Dataset) -> None:
        self.shared = bool((np.diff(ds.indptr) > 1).any())
        self.client = self.chromadb.PersistentClient(path=str(self.dir))
        space = "l2" if ds.metric == "l2" else "cosine"
        self.col = self.client.create_collection(
            "vectors",
            embedding_function=None,
            configuration={"hnsw": {"space": space, "max_neighbors": 16, "ef_construction": 100}},
        )
        self.ef: int | None = None
        lists = [ds.tenants[ds.indptr[i] : ds.indptr[i + 1]] for i in range(len(ds.base))]
        self.insert_batch(np.arange(len(ds.base)), ds.base, lists)

    def _set_ef(self, ef: int) -> None:
        if ef != self.ef:
            self.col.modify(configuration={"hnsw": {"ef_search": ef}})
            self.ef = ef

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        self._set_ef(max(k, setting["ef_search"]))
        key = tenant_key(tenant)
        where = {"tenants": {"$contains": key}} if self.shared else {"tenant": key}
        res = self.col.query(query_embeddings=q, n_results=k, where=where, include=["distances"])
        ids = np.full((len(q), k), -1, np.int64)
        dist = np.full((len(q), k), np.inf, np.float32)
        for r, (a, b) in enumerate(zip(res["ids"], res["distances"] or [], strict=True)):
            ids[r, : len(a)] = np.array(a, np.int64)
            dist[r, : len(b)] = b
        return ids, dist

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        self.col.add(ids=[str(row)], embeddings=x[None], metadatas=[self._meta(tenants)])

    def insert_batch(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> None:
        for a in range(0, len(ids), ADD_CHUNK):
            b = min(a + ADD_CHUNK, len(ids))
            self.col.add(
                ids=[str(int(i)) for i in ids[a:b]],
                embeddings=x[a:b],
                metadatas=[self._meta(ts) for ts in lists[a:b]],
            )
