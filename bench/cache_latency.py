"""Semantic-cache lookup latency at 10k and 1M entries, in-process and over gRPC on loopback.

    python -m bench.cache_latency [--sizes 10000,1000000] [--lookups 2000]

For each size: fills one partition (tenant, model, fingerprint) with that many entries
(384-d unit vectors from a seeded mixture of 2,000 clusters, like sentence embeddings; 200-byte
responses) through `store_entries`, then times single lookups in this process:
  miss      a new prompt whose embedding is near no entry (the full semantic tier runs),
  semantic  a reworded prompt at cosine 0.97 to a stored one (graph search + LMDB read),
  exact     a stored prompt repeated (digest map + LMDB read),
and the share of semantic lookups that found their own entry (the graph's recall where it
matters). Then it starts `python -m server` on the same data directory in its own process
(which rebuilds the cache from LMDB; the time is reported) and times the same lookups through
the SDK. Targets: miss path <= 0.5 ms in-process and <= 2 ms over gRPC at 1M entries.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tqdm import tqdm

from bench.metrics import latency_stats, trim_memory
from bench.wire import BENCH_ADMIN_KEY, bare_rtt, start_server
from client import Client
from curator.cache import CacheConfig
from curator.config import DatabaseConfig
from curator.database import Database

DIM = 384
MODEL = "bench-model"


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def embeddings(n: int, seed: int = 0, clusters: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        c = rng.integers(0, clusters, m)
        out[s : s + m] = unit_rows(centers[c] + 0.8 * rng.standard_normal((m, DIM)))
    return out


def reworded(v: np.ndarray, sim: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at cosine `sim` to each row of the unit rows v."""
    r = rng.standard_normal(v.shape).astype(np.float32)
    r -= (r * v).sum(1, keepdims=True) * v
    r = unit_rows(r)
    return unit_rows(sim * v + np.sqrt(1 - sim**2) * r)


def fill(path: Path, x: np.ndarray) -> float:
    db = Database(
        DatabaseConfig(data_dir=str(path), sync=False),
        background=False,
        cache_config=CacheConfig(sweep_every_s=0, tenant_max_entries=0),
    )
    db.create_tenant("t")
    t0 = time.perf_counter()
    step = 20_000
    for s in tqdm(range(0, len(x), step), desc=f"fill {len(x):,}", unit="batch", leave=False):
        rows = range(s, min(s + step, len(x)))
        db.cache.store_entries(
            db._cache_tenant("t"),  # the cache keys a tenant by its stable id
            [f"prompt number {i}" for i in rows],
            x[s : s + len(rows)],
            [f"response {i} ".ljust(200, ".") for i in rows],
            model=MODEL,
            category="chat",
        )
    seconds = time.perf_counter() - t0
    db.close()
    return seconds


def time_lookups(
    lookup: Callable[[str, np.ndarray], Any], cases: dict[str, tuple[list[str], np.ndarray]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (prompts, vecs) in cases.items():
        lat, results = [], []
        for p, v in zip(prompts, vecs, strict=True):
            t0 = time.perf_counter()
            r = lookup(p, v)
            lat.append(time.perf_counter() - t0)
            results.append(r)
        out[name] = {**latency_stats(lat), "results": results}
    return out


def run_size(n: int, n_lookups: int, root: Path) -> dict[str, Any]:
    path = root / f"cache-{n}"
    x = embeddings(n)
    fill_s = fill(path, x)
    rng = np.random.default_rng(1)
    pick = rng.choice(n, n_lookups, replace=False)
    far = embeddings(n_lookups, seed=99, clusters=50)  # other clusters than the entries'
    cases = {
        "miss": ([f"never asked {i}" for i in range(n_lookups)], far),
        "semantic": ([f"reworded {i}" for i in pick], reworded(x[pick], 0.97, rng)),
        "exact": ([f"prompt number {i}" for i in pick], x[pick]),
    }
    trim_memory()
    m0 = psutil.Process().memory_info()
    t0 = time.perf_counter()
    db = Database(DatabaseConfig(data_dir=str(path), sync=False), background=False)
    open_s = time.perf_counter() - t0
    trim_memory()  # what the open keeps, not what it used on the way
    m1 = psutil.Process().memory_info()
    mem, mapped = m1.rss - m0.rss, m1.shared - m0.shared  # mapped: LMDB pages (file-backed)

    def local(p: str, v: np.ndarray) -> Any:
        return db.cache_lookup(p, v, tenant="t", model=MODEL, category="chat")

    time_lookups(local, {k: (p[:200], v[:200]) for k, (p, v) in cases.items()})  # warm-up
    inproc = time_lookups(local, cases)
    db.close()
    t0 = time.perf_counter()
    proc, port = start_server(path)
    server_open_s = time.perf_counter() - t0
    try:
        bare = bare_rtt(port, 500)
        with Client(f"127.0.0.1:{port}", BENCH_ADMIN_KEY) as client:

            def remote(p: str, v: np.ndarray) -> Any:
                return client.cache_lookup(p, v, tenant="t", model=MODEL, category="chat")

            time_lookups(remote, {k: (p[:200], v[:200]) for k, (p, v) in cases.items()})
            wire = time_lookups(remote, cases)
    finally:
        proc.terminate()
        proc.wait(120)
    out: dict[str, Any] = {
        "n": n,
        "fill_s": fill_s,
        "open_s": open_s,
        "server_open_s": server_open_s,
        "rss_mib": mem / 2**20,
        "mapped_mib": mapped / 2**20,
        "bare_rtt_us": bare * 1e6,
    }
    for where, res in (("in-process", inproc), ("gRPC", wire)):
        for name, d in res.items():
            rs = d.pop("results")
            if name == "miss":
                d["hit_share"] = float(np.mean([r.hit for r in rs]))
            else:
                want = {f"reworded {i}": i for i in pick} | {f"prompt number {i}": i for i in pick}
                ok = [r.hit and r.response.startswith(f"response {want[p]} ".encode())
                      for r, p in zip(rs, cases[name][0], strict=True)]  # fmt: skip
                d["found_own_entry"] = float(np.mean(ok))
            out[f"{where}/{name}"] = d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--lookups", type=int, default=2000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="curator-cache-lat-"))
    try:
        results = [run_size(int(s), args.lookups, root) for s in args.sizes.split(",")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| entries | path | where | p50 us | p99 us | correct |")
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    for r in results:
        for key, d in r.items():
            if "/" not in key:
                continue
            where, name = key.split("/")
            correct = d.get("found_own_entry", 1 - d.get("hit_share", 0))
            print(
                f"| {r['n']:,} | {name} | {where} | {d['p50_us']:.0f} | {d['p99_us']:.0f} "
                f"| {correct:.3f} |"
            )
    for r in results:
        print(
            f"{r['n']:,} entries: fill {r['fill_s']:.1f} s, open (rebuild) {r['open_s']:.1f} s "
            f"in-process / {r['server_open_s']:.1f} s server, cache RSS {r['rss_mib']:.0f} MiB "
            f"({r['mapped_mib']:.0f} MiB of it LMDB's file-backed map, "
            f"{(r['rss_mib'] - r['mapped_mib']) * 2**20 / r['n']:.0f} B/entry anonymous), "
            f"bare gRPC round trip {r['bare_rtt_us']:.0f} us"
        )
    big = max(results, key=lambda r: r["n"])
    miss_local = big["in-process/miss"]["p50_us"] / 1000
    miss_wire = big["gRPC/miss"]["p50_us"] / 1000
    print(
        f"miss path at {big['n']:,} entries: {miss_local:.3f} ms in-process (target <= 0.5: "
        f"{'PASS' if miss_local <= 0.5 else 'NOT MET'}), {miss_wire:.3f} ms over gRPC "
        f"(target <= 2: {'PASS' if miss_wire <= 2 else 'NOT MET'})"
    )


if __name__ == "__main__":
    main()
