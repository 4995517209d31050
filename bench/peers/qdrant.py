"""Qdrant's embedded engine (qdrant-edge-py), set up the way Qdrant documents multitenancy:
one collection, the tenant in a keyword payload field indexed with `is_tenant=True`, HNSW with
`m=0, payload_m=16` (no global graph; one graph per tenant value), and a filter on the field at
query time. A vector shared with several tenants carries all of them (a keyword array)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bench.datasets import Dataset
from bench.peers.base import Peer, pad_results, tenant_key

__all__ = ["QdrantEdge"]

FULL_SCAN_KB = 10_000  # Qdrant's default: a filter matching less than this is scanned exactly
UPSERT_CHUNK = 2000


class QdrantEdge(Peer):
    name = "qdrant-edge"
    settings: ClassVar[list[dict[str, Any]]] = [
        {"hnsw_ef": ef} for ef in (16, 32, 64, 128, 256, 512)
    ]

    def __init__(self, root: str | None = None) -> None:
        import qdrant_edge

        self.qe = qdrant_edge
        super().__init__(root)

    def build(self, ds: Dataset) -> None:
        qe = self.qe
        self.l2 = ds.metric == "l2"
        dist = qe.Distance.Euclid if self.l2 else qe.Distance.Cosine
        cfg = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=ds.base.shape[1], distance=dist),
            hnsw_config=qe.HnswIndexConfig(
                m=0, ef_construct=100, full_scan_threshold=FULL_SCAN_KB, payload_m=16
            ),
            # Index every segment (the default threshold leaves small segments unindexed).
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            wal_enabled=False,
        )
        self.shard = qe.EdgeShard.create(str(self.dir / "shard"), cfg)
        self.shard.update(
            qe.UpdateOperation.create_field_index("tenant", qe.KeywordIndexParams(is_tenant=True))
        )
        lists = [ds.tenants[ds.indptr[i] : ds.indptr[i + 1]] for i in range(len(ds.base))]
        self.insert_batch(np.arange(len(ds.base)), ds.base, lists, optimize=False)
        self.shard.optimize()
        self.shard.flush()

    def _filter(self, tenant: int) -> Any:
        qe = self.qe
        return qe.Filter(
            must=[qe.FieldCondition("tenant", match=qe.MatchValue(tenant_key(tenant)))]
        )

    def _request(self, v: np.ndarray, flt: Any, k: int, setting: dict[str, Any]) -> Any:
        qe = self.qe
        return qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(v.tolist()),
            filter=flt,
            params=qe.SearchParams(hnsw_ef=max(k, setting["hnsw_ef"])),
        )

    def _distance(self, score: float) -> float:
        # Euclid scores are distances (squared here); cosine scores are similarities.
        return score * score if self.l2 else 1.0 - score

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        flt = self._filter(tenant)
        if len(q) == 1:
            hits = [self.shard.query(self._request(q[0], flt, k, setting))]
        else:
            reqs = [self._request(v, flt, k, setting) for v in q]
            hits = self.shard.query_batch(self.qe.QueryBatchRequest(reqs))
        return pad_results([[(int(p.id), self._distance(p.score)) for p in h] for h in hits], k)

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        self.insert_batch(np.array([row]), x[None], [tenants], optimize=False)

    def insert_batch(
        self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray], optimize: bool = False
    ) -> None:
        qe = self.qe
        for a in range(0, len(ids), UPSERT_CHUNK):
            points = [
                qe.Point(int(ids[i]), x[i].tolist(), {"tenant": [tenant_key(t) for t in lists[i]]})
                for i in range(a, min(a + UPSERT_CHUNK, len(ids)))
            ]
            self.shard.update(qe.UpdateOperation.upsert_points(points))
        if optimize:
            self.shard.optimize()

    def close(self) -> None:
        if hasattr(self, "shard"):
            self.shard.close()
        super().close()
