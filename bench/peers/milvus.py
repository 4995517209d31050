"""Milvus Lite (pymilvus MilvusClient on a local file), with the tenant as a scalar field and a
boolean filter expression at search time (`tenant == "t3"`; shared vectors: an ARRAY<VARCHAR>
field and `ARRAY_CONTAINS(tenants, "t3")`). Milvus documents a partition key for
multi-tenancy; milvus-lite 3.x does not narrow a search by it (see research/peers-here.md), so
the filter is what isolates tenants. milvus-lite 3.x is a Python rewrite, not the Milvus
engine: this measures what `pip install milvus-lite` gives, not a Milvus server."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bench.datasets import Dataset
from bench.peers.base import Peer, tenant_key

__all__ = ["MilvusLite"]

INSERT_CHUNK = 5000


class MilvusLite(Peer):
    name = "milvus-lite"
    settings: ClassVar[list[dict[str, Any]]] = [{"ef": ef} for ef in (16, 64, 256)]
    query_cap = 100  # a query costs 0.1-1 s here: fewer queries per setting

    def __init__(self, root: str | None = None) -> None:
        from pymilvus import DataType, MilvusClient

        self.DataType, self.MilvusClient = DataType, MilvusClient
        super().__init__(root)

    def build(self, ds: Dataset) -> None:
        dt = self.DataType
        self.shared = bool((np.diff(ds.indptr) > 1).any())
        self.client = self.MilvusClient(str(self.dir / "milvus.db"))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", dt.INT64, is_primary=True)
        schema.add_field("vector", dt.FLOAT_VECTOR, dim=ds.base.shape[1])
        if self.shared:
            cap = int(np.diff(ds.indptr).max())
            schema.add_field(
                "tenants", dt.ARRAY, element_type=dt.VARCHAR, max_capacity=cap, max_length=16
            )
        else:
            schema.add_field("tenant", dt.VARCHAR, max_length=16)
        params = self.client.prepare_index_params()
        metric = "L2" if ds.metric == "l2" else "COSINE"
        params.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type=metric,
            params={"M": 16, "efConstruction": 100},
        )
        self.l2 = ds.metric == "l2"
        self.client.create_collection("vectors", schema=schema, index_params=params)
        lists = [ds.tenants[ds.indptr[i] : ds.indptr[i + 1]] for i in range(len(ds.base))]
        self.insert_batch(np.arange(len(ds.base)), ds.base, lists)
        self.client.load_collection("vectors")

    def _row(self, i: int, v: np.ndarray, ts: np.ndarray) -> dict[str, Any]:
        if self.shared:
            return {"id": int(i), "vector": v, "tenants": [tenant_key(t) for t in ts]}
        return {"id": int(i), "vector": v, "tenant": tenant_key(ts[0])}

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        key = tenant_key(tenant)
        flt = f'ARRAY_CONTAINS(tenants, "{key}")' if self.shared else f'tenant == "{key}"'
        res = self.client.search(
            "vectors",
            data=list(q),
            limit=k,
            filter=flt,
            search_params={"params": {"ef": max(k, setting["ef"])}},
            output_fields=["id"],
        )
        ids = np.full((len(q), k), -1, np.int64)
        dist = np.full((len(q), k), np.inf, np.float32)
        for r, hits in enumerate(res):
            for j, h in enumerate(list(hits)[:k]):
                ids[r, j] = h["id"]
                dist[r, j] = h["distance"] if self.l2 else 1.0 - h["distance"]
        return ids, dist

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        self.client.insert("vectors", [self._row(row, x, tenants)])

    def insert_batch(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> None:
        for a in range(0, len(ids), INSERT_CHUNK):
            b = min(a + INSERT_CHUNK, len(ids))
            self.client.insert("vectors", [self._row(ids[i], x[i], lists[i]) for i in range(a, b)])

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        super().close()
