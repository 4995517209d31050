"""What routing costs: search p50 on three cluster nodes against one plain server, on the same
Debian tenants (the three largest maintainers, 384-d cosine).

    python -m bench.cluster_overhead [--queries 200] [--tenants 3]

Starts a throwaway etcd, three `python -m server --cluster` nodes (the tenants spread one per
node by group) and one `python -m server`, loads the same vectors into both, then times one
query at a time: one tenant on the single server; one tenant through the SDK straight to its
home node (direct); the same through a plain client on another node (forwarded: one extra
hop); a union of all the tenants on the single server and across the three nodes (fan-out
and top-k merge). Prints p50s and the differences with the load average. On 2 shared cores
every process competes for the same CPUs: a quiet re-run is needed, and no scale-up can show.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.cluster_footprint import _free_port, _start_etcd
from bench.datasets import DATA
from client import Client
from client.cluster import ClusterClient
from server.health_probe import check

ROOT = Path(__file__).resolve().parents[1]


def _server(
    root: Path, name: str, key: str, *flags: str, address: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """A server process (data in root/name) at `address` (a free port if "")."""
    address = address or f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}
    env["CURATOR_ADMIN_KEY"] = key
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--address", address, "--data-dir", str(root / name),
         "--log-format", "text", *flags],
        stderr=(root / f"{name}.log").open("ab"),
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    return proc, address


def _wait_serving(address: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while check(address, timeout=1) != "SERVING":
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server at {address} did not start")
        time.sleep(0.2)


def _p50(fn: Callable[[int], object], n: int) -> float:
    for i in range(min(20, n)):
        fn(i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def largest_tenants(
    n_tenants: int, n_queries: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Debian's base vectors, its first `n_queries` queries, and the rows of its
    `n_tenants` largest tenants by name ("m<id>"), largest first."""
    base = np.load(DATA / "base.npy").astype(np.float32)
    owner = np.load(DATA / "base_tenant.npy").astype(np.int64)
    queries = np.load(DATA / "queries.npy")[:n_queries].astype(np.float32)
    biggest = np.argsort(-np.bincount(owner))[:n_tenants]
    return base, queries, {f"m{int(t)}": np.flatnonzero(owner == t) for t in biggest}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--tenants", type=int, default=3)
    args = ap.parse_args()
    base, queries, rows = largest_tenants(args.tenants, args.queries)
    names = list(rows)
    root = Path(tempfile.mkdtemp(prefix="curator-overhead-"))
    key = "cdb_admin_" + secrets.token_urlsafe(32)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd, port = _start_etcd(root)
        procs.append(etcd)
        nodes = []
        for n in ("n1", "n2", "n3"):
            p, a = _server(root, n, key, "--cluster", "--node-id", n, "--etcd", f"127.0.0.1:{port}")
            procs.append(p)
            nodes.append(a)
        single, one = _server(root, "single", key)
        procs.append(single)
        for p, a in zip(procs[1:], [*nodes, one], strict=True):
            _wait_serving(a, p)
        with ClusterClient([nodes[0]], key, timeout=60) as cc, Client(one, key, timeout=60) as s:
            for db in (cc, s):
                db.create_collection("deb", base.shape[1], "cosine")
            for i, n in enumerate(names):
                cc.create_tenant(n, group=f"g{i}")
                s.create_tenant(n)
                for db in (cc, s):
                    ids = rows[n]
                    db.upsert("deb", ids, base[ids], tenant=n)
            homes = {n: cc.placements[n].node for n in names}
            t = names[0]
            other = next(a for n, a in zip(("n1", "n2", "n3"), nodes, strict=True)
                         if n != homes[t])  # fmt: skip
            with Client(other, key, timeout=60) as fwd:
                q = queries

                def one_q(db: object, tenant: str | list[str]) -> Callable[[int], object]:
                    return lambda i: db.search("deb", q[i : i + 1], k=10, tenant=tenant)  # type: ignore[attr-defined]

                single_one = _p50(one_q(s, t), len(q))
                direct = _p50(one_q(cc, t), len(q))
                forwarded = _p50(one_q(fwd, t), len(q))
                single_union = _p50(one_q(s, names), len(q))
                union3 = _p50(one_q(cc, names), len(q))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
    sizes = [len(rows[n]) for n in names]
    print(f"tenants {dict(zip(names, sizes, strict=True))} on {sorted(set(homes.values()))}; "
          f"{len(q)} queries, k=10, p50 ms:")  # fmt: skip
    hop = forwarded - direct
    print(f"  one tenant: single server {single_one:.2f}, cluster direct {direct:.2f} "
          f"({direct - single_one:+.2f}), forwarded {forwarded:.2f} ({hop:+.2f})")  # fmt: skip
    print(f"  union of {len(names)}: single server {single_union:.2f}, 3 nodes {union3:.2f} "
          f"({union3 - single_union:+.2f})")  # fmt: skip
    print(f"  loadavg {open('/proc/loadavg').read().split()[0]}: a quiet re-run is needed")


if __name__ == "__main__":
    main()
