"""A tenant move between two in-process nodes under writes: copy rate and write pause.

    python -m bench.move [--n 20000] [--dim 128] [--rate 100]

Node n1 holds one tenant of `n` seeded vectors (with documents, a third granted to a second
tenant); a writer thread upserts at about `rate` ops/s through a router that follows the
placement (in-memory control plane, directory bundle store). The move n1 -> n2 runs with the
target's background trainer on, as a server runs. Prints vectors/s of the base copy (export
+ import), catch-up rounds, the write pause (freeze to activation) and the slowest write
the writer saw, with the load average: the box is shared, re-run on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from curator.cluster.bundle_store import DirectoryStore
from curator.cluster.contracts import NodeInfo, Placement
from curator.cluster.memory_control import MemoryControlPlane
from curator.cluster.mover import Mover
from curator.cluster.node_ops import LocalNodeOps
from curator.config import DatabaseConfig
from curator.database import Database
from curator.errors import TenantMoved, TenantMoving


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="curator-move-"))
    dbs = {n: Database(DatabaseConfig(data_dir=str(root / n))) for n in ("n1", "n2")}
    control = MemoryControlPlane()
    src = dbs["n1"]
    for i, name in enumerate(("a", "b"), 1):
        control.add_node(NodeInfo(f"n{i}", ""))
        src.create_tenant(name, tenant_id=i)
        control.cas_placement(None, Placement(name, i, "n1", 1))
    src.allow_sharing("a", "b")
    src.create_collection("c", args.dim, "cosine")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    with src.bulk_load("c"):
        src.upsert("c", np.arange(args.n), x, [f"doc {i}" for i in range(args.n)], tenant="a")
    src.grant("c", np.arange(0, args.n, 3), "b", tenant="a")
    src.search("c", x[:1], 10, tenant="a")
    stop, slowest, acks = threading.Event(), [0.0], [0]

    def writer() -> None:
        i = args.n
        while not stop.is_set():
            t0 = time.monotonic()
            while True:
                p = control.placement("a")
                try:
                    if p is not None and p.state != "activating":
                        dbs[p.node].upsert("c", [i], x[i % args.n : i % args.n + 1], tenant="a")
                        break
                except (TenantMoving, TenantMoved):
                    pass
                time.sleep(0.001)
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            acks[0] += 1
            i += 1
            time.sleep(1 / args.rate)

    ops = {n: LocalNodeOps(db) for n, db in dbs.items()}
    mover = Mover(control, ops, DirectoryStore(root / "bundles"))
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    report = mover.move("a", "n2")
    took = time.monotonic() - t0
    time.sleep(1.0)
    stop.set()
    w.join()
    copy = report.seconds.get("copy", float("nan"))
    phases = ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items())
    print(
        f"moved {args.n} x {args.dim} in {took:.2f} s: base copy {copy:.2f} s "
        f"({args.n / copy:.0f} vectors/s), {report.rounds} catch-up rounds, write pause "
        f"{report.pause_s * 1000:.0f} ms, slowest write {slowest[0] * 1000:.0f} ms, "
        f"{acks[0]} writes; phases (s) {phases}; loadavg {open('/proc/loadavg').read().split()[:3]}"
    )
    for db in dbs.values():
        db.close(snapshot=False)


if __name__ == "__main__":
    main()
