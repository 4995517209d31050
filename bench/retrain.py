"""Search and write latency while the shared tree retrains, against the same load without one.

    python -m bench.retrain [--n 200000] [--dim 64] [--tenants 200] [--seconds 10]

Builds a database of `n` seeded clustered vectors (owners of Zipf-like sizes) with one bulk
load (trained once), then runs the same load twice, each time for the length of one
retraining: a reader thread doing single-query tenant searches back to back and a writer
thread upserting one vector every 5 ms.
  1. baseline: no training (runs `--seconds`);
  2. retrain: `Database.train` runs in a third thread (a full retrain off the write path:
     copy, train, replay, swap); the load is measured only while it runs.
Prints p50 / p99 / max of both, and the p99 ratio (issue #11 target: search p99 during a
retrain <= 2x outside one; no write waits for training, i.e. the write max stays far below
the training time). The machine's load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import startup
from curator.config import DatabaseConfig
from curator.database import Database


def load(
    db: Database, dim: int, n_tenants: int, stop: threading.Event, seed: int
) -> tuple[list[float], list[float]]:
    """Run a reader and a writer until `stop`; returns their latencies in seconds."""
    searches: list[float] = []
    writes: list[float] = []

    def reader() -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            q = rng.standard_normal(dim).astype(np.float32) * 4
            t = time.perf_counter()
            db.search("bench", q, k=10, tenant=f"t{rng.integers(0, n_tenants)}")
            searches.append(time.perf_counter() - t)

    def writer() -> None:
        rng = np.random.default_rng(seed + 1)
        next_id = 10**12 + seed * 10**6
        while not stop.is_set():
            x = rng.standard_normal((1, dim)).astype(np.float32) * 4
            t = time.perf_counter()
            db.upsert("bench", [next_id], x, tenant=f"t{rng.integers(0, n_tenants)}")
            writes.append(time.perf_counter() - t)
            next_id += 1
            stop.wait(0.005)

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return searches, writes


def _row(what: str, lat: list[float]) -> str:
    a = np.asarray(lat) * 1e3
    return (
        f"| {what} | {len(a)} | {np.median(a):.2f} | {np.percentile(a, 99):.2f} | {a.max():.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--tenants", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="baseline length")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="curator-retrain-") as root:
        cfg = DatabaseConfig(
            data_dir=str(Path(root)), sync=False, snapshot_every_writes=0, snapshot_every_seconds=0
        )
        with Database(cfg) as db:
            t0 = time.perf_counter()
            startup.load(db, args.n, args.dim, args.tenants, rng)
            print(f"built and trained {args.n} x {args.dim} in {time.perf_counter() - t0:.1f} s")
            stop = threading.Event()
            timer = threading.Timer(args.seconds, stop.set)
            timer.start()
            base_s, base_w = load(db, args.dim, args.tenants, stop, seed=1)

            stop = threading.Event()
            took: list[float] = []

            def retrain() -> None:
                t = time.perf_counter()
                db.train("bench")
                took.append(time.perf_counter() - t)
                stop.set()

            trainer = threading.Thread(target=retrain)
            trainer.start()
            during_s, during_w = load(db, args.dim, args.tenants, stop, seed=2)
            trainer.join()
    print(f"retrain took {took[0]:.1f} s; loadavg {open('/proc/loadavg').read().strip()}")
    print("| load | ops | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
    print(_row("search, no training", base_s))
    print(_row("search, during a retrain", during_s))
    print(_row("upsert, no training", base_w))
    print(_row("upsert, during a retrain", during_w))
    ratio = np.percentile(during_s, 99) / np.percentile(base_s, 99)
    print(f"search p99 ratio during / outside a retrain: {ratio:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
