"""µs per insert of one vector plus its 2 grants, in-process, on a trained index (no graph),
one call at a time and in batches; `--profile` prints where the time goes (cProfile).

Then a large tenant under streaming writes: search p50 of a tenant owning 60% of the
vectors, alone and with one insert into that tenant before each search (the tenant's cached
search view is patched by a write, not rebuilt).

Run: `python -m bench.write_path [--n 50000] [--ops 2000] [--profile]`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from curator import CuratorIndex, IndexConfig


def _index(n: int, d: int, tenants: int, rng: np.random.Generator) -> CuratorIndex:
    x = rng.standard_normal((n, d)).astype(np.float32)
    idx = CuratorIndex(d, "l2", IndexConfig(train_min_vectors=n, graph_degree=0))
    owner = rng.integers(0, tenants, n)
    idx.auto_train = False
    for t in range(tenants):
        rows = np.flatnonzero(owner == t)
        idx.insert(rows, x[rows], owner=f"t{t}")
    idx.train()
    return idx


def one_by_one(idx: CuratorIndex, ops: int, d: int, tenants: int, rng: np.random.Generator) -> str:
    x = rng.standard_normal((ops, d)).astype(np.float32)
    t_of = rng.integers(0, tenants, (ops, 3))
    base = 10**9
    lat = []
    for i in range(ops):
        t = time.perf_counter()
        owner = f"t{t_of[i, 0]}"
        idx.insert([base + i], x[i : i + 1], owner=owner)
        idx.grant([base + i], f"t{t_of[i, 1]}", owner=owner)
        idx.grant([base + i], f"t{t_of[i, 2]}", owner=owner)
        lat.append(time.perf_counter() - t)
    a = np.array(lat) * 1e6
    p99 = np.percentile(a, 99)
    return f"| one vector + 2 grants | {np.median(a):.0f} | {a.mean():.0f} | {p99:.0f} |"


def batches(idx: CuratorIndex, ops: int, d: int, tenants: int, rng: np.random.Generator) -> str:
    size = 256
    x = rng.standard_normal((ops, d)).astype(np.float32)
    base = 2 * 10**9
    lat = []
    for s in range(0, ops - size + 1, size):
        ids = np.arange(base + s, base + s + size)
        t = time.perf_counter()
        owner = f"t{rng.integers(0, tenants)}"
        idx.insert(ids, x[s : s + size], owner=owner)
        idx.grant(ids, f"t{rng.integers(0, tenants)}", owner=owner)
        idx.grant(ids, f"t{rng.integers(0, tenants)}", owner=owner)
        lat.append((time.perf_counter() - t) / size)
    a = np.array(lat) * 1e6
    what = f"batch of {size} + 2 grants each (per vector)"
    return f"| {what} | {np.median(a):.1f} | {a.mean():.1f} | - |"


def big_tenant(n: int, d: int, rng: np.random.Generator, ops: int = 500) -> list[str]:
    x = rng.standard_normal((n, d)).astype(np.float32)
    idx = CuratorIndex(d, "l2", IndexConfig(train_min_vectors=n, graph_degree=0))
    idx.auto_train = False
    big = int(n * 0.6)
    idx.insert(np.arange(big), x[:big], owner="big")
    idx.insert(np.arange(big, n), x[big:], owner="small")
    idx.train()
    q = x[rng.integers(0, n, ops)] + 0.05
    rows = []
    for interleave in (False, True):
        lat = []
        for i in range(ops):
            if interleave:
                idx.insert([10**9 + i], x[i : i + 1] + 0.01, owner="big")
            t = time.perf_counter()
            idx.search("big", q[i : i + 1], 10)
            lat.append(time.perf_counter() - t)
        what = "after each insert into it" if interleave else "alone"
        rows.append(f"| search of a {big:,}-vector tenant, {what} | {np.median(lat) * 1e6:.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--tenants", type=int, default=500)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    idx = _index(a.n, a.d, a.tenants, rng)
    one_by_one(idx, 50, a.d, a.tenants, rng)  # warm-up (kernels compiled)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)
    print("| operation | p50 µs | mean µs | p99 µs |\n|---|---:|---:|---:|")
    if a.profile:
        pr = cProfile.Profile()
        pr.enable()
    print(one_by_one(idx, a.ops, a.d, a.tenants, rng), flush=True)
    if a.profile:
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(15)
    print(batches(idx, a.ops * 4, a.d, a.tenants, rng), flush=True)
    print("\n| large tenant | p50 µs |\n|---|---:|")
    print("\n".join(big_tenant(a.n, a.d, rng)), flush=True)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)


if __name__ == "__main__":
    main()
