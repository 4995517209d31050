"""kill -9 of one cluster node: what the other nodes' tenants see; and one node vs three in QPS.

    python -m bench.cluster_kill [--tenants 6] [--window 8] [--rate 100] [--qps-seconds 4]

Starts a throwaway etcd, three `python -m server --cluster` nodes (the Debian set's largest
maintainers, 384-d cosine, spread over the nodes by group) and one plain `python -m server`
with the same tenants. Then:

1. QPS, one node vs three: `--clients` closed-loop threads search a random tenant (one query,
   k=10) for `--qps-seconds`, against the single server, then against the cluster through the
   SDK (each query to its tenant's home); both trained after the load, and a first shorter
   round of each warms them.
2. kill -9: paced searches (`--rate` per second in all, latency counted from the time each
   was due, so a stall is not hidden) of the tenants on two of the nodes, for a baseline
   window; then SIGKILL of the third node, left down for a window; then restarted on its data
   directory, for a last window (its start-up included). Prints p50/p99 and errors of each
   window and the victim's time back to SERVING. Issue bar: 0 errors, p99 at most twice the
   baseline's (on separate machines a restarting node's start-up would not take the
   survivors' CPU, as it does here).

On 2 shared cores the three nodes and the single server compete for the same CPUs (and the
restarting node's start-up competes with the survivors): no absolute scale-up can show, and a
quiet re-run is needed for the numbers.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.cluster_footprint import _start_etcd
from bench.cluster_overhead import _server, _wait_serving, largest_tenants
from client import Client
from client.cluster import ClusterClient

NODES = ("n1", "n2", "n3")


def _qps(make: Callable[[], object], names: list[str], q: np.ndarray, clients: int,
         seconds: float) -> float:  # fmt: skip
    """Searches per second of `clients` closed-loop threads, each with its own client."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        rng = np.random.default_rng(i)
        with make() as db:  # type: ignore[attr-defined]
            while time.monotonic() < stop:
                j = int(rng.integers(len(q)))
                db.search("deb", q[j : j + 1], k=10, tenant=names[j % len(names)])
                done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0)


class _Paced:
    """Searches of `names` at `rate` per second over `threads` threads: (due, latency s,
    error or "") per search."""

    def __init__(self, seed: str, key: str, names: list[str], q: np.ndarray, rate: float,
                 threads: int = 2) -> None:  # fmt: skip
        self.seed, self.key, self.names, self.q = seed, key, names, q
        self.period = threads / rate
        self.log: list[tuple[float, float, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, i: int) -> None:
        with ClusterClient([self.seed], self.key, timeout=5) as cc:
            due = time.monotonic() + i * self.period / len(self.threads)
            n = i
            while not self.stop.is_set():
                time.sleep(max(0.0, due - time.monotonic()))
                j, tenant = n % len(self.q), self.names[n % len(self.names)]
                error = ""
                try:
                    cc.search("deb", self.q[j : j + 1], k=10, tenant=tenant)
                except Exception as e:
                    error = type(e).__name__
                self.log.append((due, time.monotonic() - due, error))
                due += self.period
                n += 1

    def worst_per_second(self, t0: float, t1: float) -> list[str]:
        """The slowest search due in each second of [t0, t1) ("x" if one failed)."""
        out = []
        for s in range(int(t1 - t0)):
            rows = [(lat, err) for due, lat, err in self.log if t0 + s <= due < t0 + s + 1]
            worst = max((lat for lat, _ in rows), default=0.0) * 1e3
            out.append("x" if any(err for _, err in rows) else f"{worst:.0f}")
        return out

    def window(self, t0: float, t1: float) -> tuple[float, float, int, int]:
        """(p50 ms, p99 ms, searches, errors) of the searches due in [t0, t1)."""
        rows = [(lat, err) for due, lat, err in self.log if t0 <= due < t1]
        lat = np.array([r[0] for r in rows if not r[1]]) * 1e3
        if not len(lat):
            return float("nan"), float("nan"), len(rows), len(rows)
        p50, p99 = np.percentile(lat, [50, 99])
        return float(p50), float(p99), len(rows), sum(1 for r in rows if r[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=6)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--window", type=float, default=8.0, help="seconds per latency window")
    ap.add_argument("--rate", type=float, default=100.0, help="paced searches per second")
    ap.add_argument("--qps-seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    base, queries, rows = largest_tenants(args.tenants, args.queries)
    names = list(rows)
    root = Path(tempfile.mkdtemp(prefix="curator-kill-"))
    key = "cdb_admin_" + secrets.token_urlsafe(32)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    flags: dict[str, tuple[str, ...]] = {}
    try:
        etcd, port = _start_etcd(root)
        procs["etcd"] = etcd
        addresses = {}
        for n in NODES:
            flags[n] = ("--cluster", "--node-id", n, "--etcd", f"127.0.0.1:{port}")
            procs[n], addresses[n] = _server(root, n, key, *flags[n])
        procs["single"], one = _server(root, "single", key)
        for n, a in (*addresses.items(), ("single", one)):
            _wait_serving(a, procs[n])
        seed = addresses["n1"]
        with ClusterClient([seed], key, timeout=60) as cc, Client(one, key, timeout=60) as s:
            for db in (cc, s):
                db.create_collection("deb", base.shape[1], "cosine")
            for i, n in enumerate(names):
                cc.create_tenant(n, group=f"g{i % 3}")
                s.create_tenant(n)
                ids = rows[n]
                for db in (cc, s):
                    db.upsert("deb", ids, base[ids], tenant=n)
            homes = {n: cc.placements[n].node for n in names}
            for db in (cc, s):  # trained once, as after a bulk load
                db.train("deb")
        make_single = lambda: Client(one, key, timeout=60)  # noqa: E731
        make_cluster = lambda: ClusterClient([seed], key, timeout=60)  # noqa: E731
        qps = {}
        for rnd in range(2):  # the first round warms (graph links built on first searches)
            for what, make in (("single", make_single), ("cluster", make_cluster)):
                seconds = args.qps_seconds if rnd else min(2.0, args.qps_seconds)
                qps[what] = _qps(make, names, queries, args.clients, seconds)
        single_qps, cluster_qps = qps["single"], qps["cluster"]
        victim = "n3"
        others = [n for n in names if homes[n] != victim]
        paced = _Paced(seed, key, others, queries, args.rate)
        paced.start()
        time.sleep(2.0)  # warm
        t_base = time.monotonic()
        time.sleep(args.window)
        t_kill = time.monotonic()
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        time.sleep(args.window)  # the node stays dead
        t_restart = time.monotonic()
        procs[victim], address = _server(root, victim, key, *flags[victim],
                                         address=addresses[victim])  # fmt: skip
        _wait_serving(address, procs[victim])
        back = time.monotonic() - t_restart
        time.sleep(max(0.0, t_restart + args.window - time.monotonic()))
        paced.close()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)
    sizes = {n: len(rows[n]) for n in names}
    print(f"tenants {sizes} on {homes}; 384-d cosine, k=10")
    print(f"  QPS, {args.clients} closed-loop clients, {args.qps_seconds:.0f} s each: one server "
          f"{single_qps:.0f}, three nodes (SDK) {cluster_qps:.0f} "
          f"({cluster_qps / single_qps:.2f}x; all on the same 2 cores)")  # fmt: skip
    print(f"  searches of the {len(others)} tenants on the other nodes, {args.rate:.0f}/s paced, "
          f"{args.window:.0f} s windows; bar: 0 errors, p99 <= 2x the baseline's")  # fmt: skip
    b99 = paced.window(t_base, t_kill)[1]
    for what, t0, t1 in (
        ("baseline", t_base, t_kill),
        (f"{victim} killed (-9), down", t_kill, t_restart),
        (
            f"{victim} restarting (back to SERVING in {back:.1f} s)",
            t_restart,
            t_restart + args.window,
        ),
    ):
        p50, p99, n, errors = paced.window(t0, t1)
        bar = "pass" if errors == 0 and p99 <= 2 * b99 else "FAIL"
        print(f"    {what}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({p99 / b99:.2f}x), "
              f"{errors}/{n} errors{'' if t0 == t_base else ': ' + bar}")  # fmt: skip
    print("    worst search (ms) per second, from 3 s before the kill to the end: "
          + " ".join(paced.worst_per_second(t_kill - 3, t_restart + args.window)))  # fmt: skip
    print(f"  loadavg {open('/proc/loadavg').read().split()[0]}: a quiet re-run is needed")


if __name__ == "__main__":
    main()
