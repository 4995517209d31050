"""LanceDB (embedded), set up the way its documentation recommends for filtered search: one
table, the tenant in a column with a scalar index (BITMAP on a string column when each vector
has one tenant; LABEL_LIST on a list<string> column when vectors are shared), an IVF_HNSW_SQ
vector index, and `.where(..., prefilter=True)` so the filter is applied before the search."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bench.datasets import Dataset
from bench.peers.base import Peer, tenant_key

__all__ = ["Lance"]


class Lance(Peer):
    name = "lancedb"
    settings: ClassVar[list[dict[str, Any]]] = [
        {"nprobes": p, "ef": ef, "refine_factor": rf}
        for p, ef, rf in ((4, 32, 1), (8, 64, 1), (16, 64, 2), (32, 128, 4), (64, 256, 4))
    ]

    def __init__(self, root: str | None = None) -> None:
        import lancedb
        import pyarrow

        self.lancedb, self.pa = lancedb, pyarrow
        super().__init__(root)

    def _rows(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> Any:
        pa = self.pa
        cols: dict[str, Any] = {
            "id": pa.array(np.asarray(ids, np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(x, np.float32).ravel()), x.shape[1]
            ),
        }
        if self.shared:
            cols["tenants"] = pa.array(
                [[tenant_key(t) for t in ts] for ts in lists], pa.list_(pa.string())
            )
        else:
            cols["tenant"] = pa.array([tenant_key(ts[0]) for ts in lists], pa.string())
        return pa.table(cols)

    def build(self, ds: Dataset) -> None:
        from lancedb.index import Bitmap, IvfHnswSq, LabelList

        self.shared = bool((np.diff(ds.indptr) > 1).any())
        lists = [ds.tenants[ds.indptr[i] : ds.indptr[i + 1]] for i in range(len(ds.base))]
        db = self.lancedb.connect(str(self.dir))
        self.table = db.create_table("vectors", self._rows(np.arange(len(ds.base)), ds.base, lists))
        metric = "l2" if ds.metric == "l2" else "cosine"
        self.table.create_index("vector", config=IvfHnswSq(distance_type=metric))
        if self.shared:
            self.table.create_index("tenants", config=LabelList())
        else:
            self.table.create_index("tenant", config=Bitmap())

    def _where(self, tenant: int) -> str:
        key = tenant_key(tenant)
        return f"array_has_any(tenants, ['{key}'])" if self.shared else f"tenant = '{key}'"

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        query = (
            self.table.search(q[0] if len(q) == 1 else q)
            .where(self._where(tenant), prefilter=True)
            .limit(k)
            .nprobes(setting["nprobes"])
            .ef(max(k, setting["ef"]))
            .refine_factor(setting["refine_factor"])
            .select(["id", "_distance"])
        )
        res = query.to_arrow()
        ids = np.full((len(q), k), -1, np.int64)
        dist = np.full((len(q), k), np.inf, np.float32)
        qi = res["query_index"].to_numpy() if "query_index" in res.column_names else None
        got, dd = res["id"].to_numpy(), res["_distance"].to_numpy()
        rows = np.zeros(len(got), np.int64) if qi is None else qi
        for r in range(len(q)):
            m = np.flatnonzero(rows == r)[:k]
            ids[r, : len(m)], dist[r, : len(m)] = got[m], dd[m]
        return ids, dist

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        self.table.add(self._rows(np.array([row]), x[None], [tenants]))

    def insert_batch(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> None:
        self.table.add(self._rows(ids, x, lists))
