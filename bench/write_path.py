"""µs per write, in-process, on a trained index (no graph): insert of one vector plus its 2
grants (three calls, and one `insert(..., readers=...)` call), then each write alone (insert,
upsert of an existing id, grant, revoke, delete), one id at a time and in batches of 256;
beside them, the baseline: one vector into 3 tenants' own hnswlib indexes (M 16, ef_c 100).
`--profile` then profiles one more pass of the single-id and batch writes (cProfile, by
tottime; the timed rows above run without the profiler).

Then a large tenant under streaming writes: search p50 of a tenant owning 60% of the
vectors, alone and with one insert into that tenant before each search (the tenant's cached
search view is patched by a write, not rebuilt).

Run: `python -m bench.write_path [--n 50000] [--ops 2000] [--profile]`.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import time
from collections.abc import Callable

import hnswlib
import numpy as np

from bench.baselines import HNSW_EFC, HNSW_M
from curator import CuratorIndex, IndexConfig

_BATCH = 256


def _index(
    n: int, d: int, tenants: int, rng: np.random.Generator
) -> tuple[CuratorIndex, list[hnswlib.Index]]:
    """The trained Curator index and, over the same vectors, one hnswlib index per tenant
    (the baseline: a new vector goes into the index of every tenant that reads it)."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    idx = CuratorIndex(d, "l2", IndexConfig(train_min_vectors=n, graph_degree=0))
    owner = rng.integers(0, tenants, n)
    idx.auto_train = False
    per_tenant = []
    for t in range(tenants):
        rows = np.flatnonzero(owner == t)
        idx.insert(rows, x[rows], owner=f"t{t}")
        h = hnswlib.Index(space="l2", dim=d)
        h.init_index(max_elements=len(rows) + 64, ef_construction=HNSW_EFC, M=HNSW_M)
        h.add_items(x[rows], rows, num_threads=1)
        per_tenant.append(h)
    idx.train()
    return idx, per_tenant


def per_tenant_hnsw(
    indexes: list[hnswlib.Index], ops: int, d: int, rng: np.random.Generator
) -> str:
    """One vector into the per-tenant hnswlib indexes of its owner and 2 readers."""
    x = rng.standard_normal((ops, d)).astype(np.float32)
    t_of = rng.choice(len(indexes), (ops, 3))

    def step(i: int) -> None:
        for t in t_of[i].tolist():
            h = indexes[t]
            if h.get_current_count() >= h.get_max_elements():
                h.resize_index(2 * h.get_max_elements())
            h.add_items(x[i : i + 1], [10**9 + i], num_threads=1)

    return _row("per-tenant hnswlib: one vector into 3 tenants' indexes", _timed(ops, step))


def _three_tenants(n: int, tenants: int, rng: np.random.Generator) -> list[list[str]]:
    """n rows of (owner, reader, reader): three distinct tenants each."""
    return [[f"t{t}" for t in rng.choice(tenants, 3, replace=False).tolist()] for _ in range(n)]


def _row(what: str, lat: list[float], per: int = 1) -> str:
    a = np.array(lat) * 1e6 / per
    p99 = f"{np.percentile(a, 99):.1f}" if per == 1 else "-"
    return f"| {what} | {np.median(a):.1f} | {a.mean():.1f} | {p99} |"


def _timed(ops: int, step: Callable[[int], None]) -> list[float]:
    lat = []
    for i in range(ops):
        t = time.perf_counter()
        step(i)
        lat.append(time.perf_counter() - t)
    return lat


def single(
    idx: CuratorIndex, ops: int, d: int, tenants: int, rng: np.random.Generator, base: int
) -> list[str]:
    """Rows for one id per call; ids base.. are new, and deleted again at the end."""
    x = rng.standard_normal((ops, d)).astype(np.float32)
    t_of = _three_tenants(ops, tenants, rng)

    def three_calls(i: int) -> None:
        owner, a, b = t_of[i]
        idx.insert([base + i], x[i : i + 1], owner=owner)
        idx.grant([base + i], a, owner=owner)
        idx.grant([base + i], b, owner=owner)

    def one_call(i: int) -> None:
        owner, a, b = t_of[i]
        idx.insert([base + ops + i], x[i : i + 1], owner=owner, readers=(a, b))

    def upsert(i: int) -> None:  # replace: the old vector and its grants go
        idx.insert([base + i], x[ops - 1 - i : ops - i], owner=t_of[i][0])

    def grant(i: int) -> None:
        idx.grant([base + i], t_of[i][1], owner=t_of[i][0])

    def revoke(i: int) -> None:
        idx.revoke([base + i], t_of[i][1], owner=t_of[i][0])

    def delete(i: int) -> None:
        idx.delete([base + i], owner=t_of[i][0])

    rows = [_row("one vector + 2 grants (3 calls)", _timed(ops, three_calls))]
    if "readers" in inspect.signature(idx.insert).parameters:  # (absent before it existed)
        rows.append(_row("one vector + 2 readers (1 call)", _timed(ops, one_call)))
    rows += [
        _row("upsert one existing id", _timed(ops, upsert)),
        _row("grant one id", _timed(ops, grant)),
        _row("revoke one id", _timed(ops, revoke)),
        _row("delete one id", _timed(ops, delete)),
    ]
    idx.delete(np.arange(base + ops, base + 2 * ops))  # the one-call rows' ids, if any
    return rows


def batched(
    idx: CuratorIndex, ops: int, d: int, tenants: int, rng: np.random.Generator, base: int
) -> list[str]:
    """Rows per vector for batches of _BATCH ids; deleted again at the end."""
    nb = max(ops // _BATCH, 1)
    x = rng.standard_normal((nb * _BATCH, d)).astype(np.float32)
    t_of = _three_tenants(nb, tenants, rng)

    def ids(i: int) -> np.ndarray:
        return np.arange(base + i * _BATCH, base + (i + 1) * _BATCH)

    def rows_of(i: int) -> np.ndarray:
        return x[i * _BATCH : (i + 1) * _BATCH]

    def three_calls(i: int) -> None:
        owner, a, b = t_of[i]
        idx.insert(ids(i), rows_of(i), owner=owner)
        idx.grant(ids(i), a, owner=owner)
        idx.grant(ids(i), b, owner=owner)

    def upsert(i: int) -> None:
        idx.insert(ids(i), rows_of(nb - 1 - i), owner=t_of[i][0])

    def grant(i: int) -> None:
        idx.grant(ids(i), t_of[i][1], owner=t_of[i][0])

    def revoke(i: int) -> None:
        idx.revoke(ids(i), t_of[i][1], owner=t_of[i][0])

    def delete(i: int) -> None:
        idx.delete(ids(i), owner=t_of[i][0])

    per = f"batch of {_BATCH}"
    return [
        _row(f"{per} + 2 grants each (per vector)", _timed(nb, three_calls), _BATCH),
        _row(f"{per}: upsert of existing ids (per vector)", _timed(nb, upsert), _BATCH),
        _row(f"{per}: grant (per id)", _timed(nb, grant), _BATCH),
        _row(f"{per}: revoke (per id)", _timed(nb, revoke), _BATCH),
        _row(f"{per}: delete (per id)", _timed(nb, delete), _BATCH),
    ]


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


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--tenants", type=int, default=500)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    idx, hnsw = _index(a.n, a.d, a.tenants, rng)
    single(idx, 50, a.d, a.tenants, rng, 10**12)  # warm-up (kernels compiled)
    batched(idx, 2 * _BATCH, a.d, a.tenants, rng, 2 * 10**12)
    print(f"loadavg {_loadavg()}", flush=True)
    print("| operation | p50 µs | mean µs | p99 µs |\n|---|---:|---:|---:|")
    print("\n".join(single(idx, a.ops, a.d, a.tenants, rng, 10**9)), flush=True)
    print(per_tenant_hnsw(hnsw, a.ops, a.d, rng), flush=True)
    print("\n".join(batched(idx, a.ops * 4, a.d, a.tenants, rng, 2 * 10**9)), flush=True)
    if a.profile:
        for name, run in (("single", single), ("batched", batched)):
            pr = cProfile.Profile()
            pr.enable()
            run(idx, a.ops, a.d, a.tenants, rng, 3 * 10**9)
            pr.disable()
            print(f"\nprofile: {name} (all rows above, once more)")
            pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    print("\n| large tenant | p50 µs |\n|---|---:|")
    print("\n".join(big_tenant(a.n, a.d, rng)), flush=True)
    print(f"loadavg {_loadavg()}", flush=True)


if __name__ == "__main__":
    main()
