"""Insert latency with the proximity graph linked on the write path (before) and by the
background linker (after), and search p50 while slots are pending. In-process, one vector
per insert call, synthetic clustered vectors.

Run: `python -m bench.graph_linking [--n 20000] [--inserts 1000] [--d 128]`.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

import numpy as np

from curator import CuratorIndex, IndexConfig, SearchParams
from curator.index import linker


def _data(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d)).astype(np.float32) * 3
    return (centers[rng.integers(0, 64, n)] + rng.standard_normal((n, d))).astype(np.float32)


def run(mode: str, base: np.ndarray, extra: np.ndarray, q: np.ndarray) -> str:
    idx = CuratorIndex(base.shape[1], "l2", IndexConfig(train_min_vectors=len(base)))
    idx.insert(np.arange(len(base)), base, owner="a")
    idx.build_graph()
    g = idx._graph
    assert g is not None
    lat: list[float] = []
    search: list[float] = []
    with linker.paused() if mode == "before" else contextlib.nullcontext():
        _inserts(mode, idx, g, len(base), extra, q, lat, search)
    if mode == "before":
        g.link_pending(idx._store)
    linker.wait_idle(120)
    a = np.array(lat) * 1e6
    return (
        f"| {mode} | {np.median(a):.0f} | {np.percentile(a, 99):.0f} | {a.max():.0f} | "
        f"{np.median(search) * 1e6:.0f} | {g.n_linked} of {len(idx)} |"
    )


def _inserts(
    mode: str,
    idx: CuratorIndex,
    g: Any,
    n0: int,
    extra: np.ndarray,
    q: np.ndarray,
    lat: list[float],
    search: list[float],
) -> None:
    for i, v in enumerate(extra):
        t = time.perf_counter()
        idx.insert([n0 + i], v[None], owner="a")
        if mode == "before" and g.pending >= g.link_min:
            g.link_pending(idx._store)  # what insert did before: link the batch inline
        lat.append(time.perf_counter() - t)
        if i % 50 == 0:
            t = time.perf_counter()
            idx.search("a", q[i % len(q)][None], 10, SearchParams())
            search.append(time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--inserts", type=int, default=1000)
    ap.add_argument("--d", type=int, default=128)
    a = ap.parse_args()
    x = _data(a.n + a.inserts + 100, a.d, 0)
    base, extra, q = x[: a.n], x[a.n : a.n + a.inserts], x[-100:]
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)
    print("| linking | insert p50 µs | p99 µs | max µs | search p50 µs | linked after |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in ("before", "after"):
        print(run(mode, base, extra, q), flush=True)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)


if __name__ == "__main__":
    main()
