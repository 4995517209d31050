"""What the wire costs: searches through gRPC on loopback vs in-process, on the Debian data.

    python -m bench.wire [--queries 2000]

Loads ../shared/data/debian into a Database (tenants = maintainers), starts `python -m server`
on it in a separate process (127.0.0.1, a free port), opens the same data read-only in this
process, then times, per query, `Database.search` in-process and `Client.search` over gRPC
(single queries, each in its own tenant), and batches of 100 queries of one tenant both ways.
Prints p50/p99 latency and QPS, the added latency of the wire (target <= 0.3 ms for a single
search), the batch overhead (target <= 15% for a batch of 100), and, for scale, the round trip
of a bare gRPC health check measured in the same run (grpcio's own floor on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tqdm import tqdm

from client import Client
from curator.config import DatabaseConfig, SearchParams
from curator.database import Database

BENCH_ADMIN_KEY = "bench-admin-" + "Vw7pQ2rZk9" * 3  # configured admin keys must be strong
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian"


def load_database(path: Path, data: Path = DATA) -> tuple[Database, np.ndarray, np.ndarray]:
    base = np.load(data / "base.npy").astype(np.float32)
    tenant = np.load(data / "base_tenant.npy")
    db = Database(
        DatabaseConfig(
            data_dir=str(path), sync=False, snapshot_every_writes=0, snapshot_every_seconds=0
        ),
        background=False,
    )
    for t in tqdm(np.unique(tenant), desc="tenants", unit="tenant", leave=False):
        db.create_tenant(f"t{t}")
    db.create_collection("debian", base.shape[1], "cosine")
    order = np.argsort(tenant, kind="stable")
    bounds = np.flatnonzero(np.diff(tenant[order])) + 1
    with db.bulk_load("debian"):  # trains once, at the end
        for rows in tqdm(np.split(order, bounds), desc="loading", unit="tenant", leave=False):
            db.upsert("debian", rows.astype(np.uint64), base[rows], tenant=f"t{tenant[rows[0]]}")
    return db, np.load(data / "queries.npy"), np.load(data / "query_tenant.npy")


def _percentiles(lat: list[float]) -> tuple[float, float, float]:
    us = np.array(lat) * 1e6
    return (
        float(np.percentile(us, 50)),
        float(np.percentile(us, 99)),
        float(len(us) / us.sum() * 1e6),
    )


def start_server(path: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--data-dir",
            str(path),
            "--address",
            "127.0.0.1:0",
            "--threads",
            "4",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CURATOR_ADMIN_KEY": BENCH_ADMIN_KEY},  # not in the process list
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        message = json.loads(line).get("message", "")
        if "listening on" in message:
            port = int(message.split("(port ")[1].split(")")[0])
            break
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        req = health_pb2.HealthCheckRequest()
        while health.Check(req, timeout=60).status != health_pb2.HealthCheckResponse.SERVING:
            time.sleep(0.1)
    return proc, port


def bare_rtt(port: int, n: int = 2000) -> float:
    """Median seconds of a health check: the cost of a gRPC call that does nothing."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        req = health_pb2.HealthCheckRequest()
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            health.Check(req)
            lat.append(time.perf_counter() - t0)
    return float(np.median(lat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="curator-wire-"))
    try:
        db, queries, qt = load_database(root)
        db.close()  # writes the snapshot the server and the reader below load
        proc, port = start_server(root)
        db = Database(DatabaseConfig(data_dir=str(root)), readonly=True)
        params = SearchParams()
        nq = min(args.queries, len(queries))
        bare = bare_rtt(port)
        with Client(f"127.0.0.1:{port}", BENCH_ADMIN_KEY) as client:
            single = {"in-process": [], "gRPC": []}
            for _ in range(2):  # warm-up pass, then the measured one
                for name in single:
                    single[name].clear()
                for i in range(nq):
                    q, t = queries[i : i + 1], f"t{qt[i]}"
                    t0 = time.perf_counter()
                    a = db.search("debian", q, 10, tenant=t, params=params)
                    t1 = time.perf_counter()
                    b = client.search("debian", q, 10, tenant=t, params=params)
                    t2 = time.perf_counter()
                    single["in-process"].append(t1 - t0)
                    single["gRPC"].append(t2 - t1)
                    assert (a.ids == b.ids).all()
            top = np.bincount(qt).argmax()
            rows = np.flatnonzero(qt == top)[:100]
            batch = {"in-process": [], "gRPC": []}
            for _ in range(30):
                t0 = time.perf_counter()
                db.search("debian", queries[rows], 10, tenant=f"t{top}", params=params)
                t1 = time.perf_counter()
                client.search("debian", queries[rows], 10, tenant=f"t{top}", params=params)
                t2 = time.perf_counter()
                batch["in-process"].append(t1 - t0)
                batch["gRPC"].append(t2 - t1)
        proc.terminate()
        proc.wait(60)
        db.close(snapshot=False)
        print(f"bare gRPC call (health check) round trip: {bare * 1e6:.0f} us median")
        print(f"single queries ({nq}, each in its own tenant), search_ef {params.search_ef}:")
        p50 = {}
        for name, lat in single.items():
            p50[name], p99, qps = _percentiles(lat)
            print(f"  {name:10s} p50 {p50[name]:8.1f} us  p99 {p99:8.1f} us  {qps:8.0f} QPS")
        added = (p50["gRPC"] - p50["in-process"]) / 1000
        print(
            f"  wire adds {added:.3f} ms at p50 (target <= 0.3 ms: "
            f"{'PASS' if added <= 0.3 else 'NOT MET'})"
        )
        print(f"batches of {len(rows)} queries of tenant t{top} ({len(batch['gRPC'])} runs):")
        med = {}
        for name, lat in batch.items():
            med[name] = float(np.median(lat)) * 1e3
            print(
                f"  {name:10s} median {med[name]:7.2f} ms  {len(rows) / med[name] * 1e3:8.0f} QPS"
            )
        over = med["gRPC"] / med["in-process"] - 1
        print(
            f"  wire adds {over * 100:.1f}% to a batch (target <= 15%: "
            f"{'PASS' if over <= 0.15 else 'NOT MET'})"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
