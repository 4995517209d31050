"""Recall@10 and p50 at the shipped defaults, through the planner, by tenant size: the tree's
stopping rule before (Curator v2: stop at the first non-improving shortlist) and after
(`planner.tree_patience`), in one run on the same index. One query per call, one thread.

Run: `python -m bench.tree_patience [--queries 80] [--sets tenant,label,synthetic]`.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter
from typing import Any

import numba
import numpy as np

from bench.baselines import CuratorBaseline
from bench.datasets import Dataset, debian, synthetic
from bench.metrics import recall_at_k, true_distances
from curator.index import planner as P

_K = 10
_EDGES = {
    "tenant": [0, 500, 1000, 2000, 4000, 7000],
    "label": [0, 500, 1000, 2000, 4000, 7000, 20000],
    "synthetic": [0, 1000, 2000, 5000, 10000, 50000],
}


def _rule(name: str) -> Any:
    return (lambda m, p: 1) if name == "before" else P.tree_patience


def by_size(idx: Any, ds: Dataset, n: int, edges: list[int], label: str) -> None:
    sizes = np.array([len(x) for x in ds.tenant_lists()])
    qsize = sizes[ds.query_tenant]
    shipped = P.tree_patience
    for lo, hi in itertools.pairwise(edges):
        qs = np.flatnonzero((qsize > lo) & (qsize <= hi))[:n]
        if not len(qs):
            continue
        med = int(np.median(qsize[qs]))
        for rule in ("before", "after"):
            P.tree_patience = _rule(rule)  # type: ignore[assignment]
            try:
                ids, lat, touched, paths = [], [], [], Counter[str]()
                for r in qs:
                    t = time.perf_counter()
                    i, _, plan = idx.search(
                        str(ds.query_tenant[r]), ds.queries[r : r + 1], _K, explain=True
                    )
                    lat.append(time.perf_counter() - t)
                    ids.append(i)
                    touched.append(plan.touched)
                    paths[plan.path] += 1
            finally:
                P.tree_patience = shipped  # type: ignore[assignment]
            got = np.vstack(ids)
            td = true_distances(ds.base, ds.metric, ds.queries[qs], got)
            rec = recall_at_k(got, ds.gt[qs], ds.gt_dist[qs], td, _K)
            print(
                f"| {label} {lo + 1}-{hi} (median {med}, {med / len(ds.base):.1%}) | {rule} | "
                f"{rec:.3f} | {np.median(lat) * 1e6:.0f} | {np.mean(touched):.0f} | "
                f"{dict(paths)} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=80)
    ap.add_argument("--sets", default="tenant,label,synthetic")
    a = ap.parse_args()
    numba.set_num_threads(1)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)
    print("| bucket | rule | recall@10 | p50 µs | touched | paths |\n|---|---|---:|---:|---:|---|")
    for name in a.sets.split(","):
        ds = (
            synthetic(n=100_000, d=128, n_tenants=200, n_queries=500)
            if name == "synthetic"
            else debian(name)
        )
        cb = CuratorBaseline()
        cb.build(ds)
        by_size(cb.index, ds, a.queries, _EDGES[name], name)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)


if __name__ == "__main__":
    main()
