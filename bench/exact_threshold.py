"""Where exact scanning stops paying: exact vs tree search by tenant size, on the Debian data.

    python -m bench.exact_threshold

Builds the index (tenants = maintainers), then for every query times the tenant's search
twice, once forced exact (exact_search_threshold = inf) and once forced through the tree
(exact_search_threshold = 0, default search_ef), and prints p50 latency and recall@10 per
tenant-size bucket. The default `exact_search_threshold` is the size where the tree becomes
faster at the recall target.
"""

from __future__ import annotations

import time

import numpy as np

from bench.baselines import CuratorBaseline
from bench.datasets import debian
from curator import SearchParams

BUCKETS = [(1, 64), (65, 256), (257, 512), (513, 1024), (1025, 2048), (2049, 10**9)]


def main() -> None:
    ds = debian("tenant")
    method = CuratorBaseline()
    method.build(ds)
    idx, queries, qt, gt = method.index, ds.queries, ds.query_tenant, ds.gt
    modes = {
        "exact": SearchParams(exact_search_threshold=1 << 40),
        "tree": SearchParams(exact_search_threshold=0),
    }
    sizes = np.array([idx.tenant_size(str(t)) for t in qt])
    rows = {}
    for name, p in modes.items():
        lat = np.zeros(len(queries))
        rec = np.zeros(len(queries))
        for _ in range(2):  # the first pass warms caches and compiles
            for i in range(len(queries)):
                t0 = time.perf_counter()
                ids, _ = idx.search(str(qt[i]), queries[i : i + 1], 10, p)
                lat[i] = time.perf_counter() - t0
                truth = set(gt[i, :10][gt[i, :10] >= 0].tolist())
                rec[i] = len(truth & set(ids[0].tolist())) / max(1, len(truth))
        rows[name] = (lat * 1e6, rec)
    print(
        f"{'tenant size':>14s} {'queries':>8s} {'exact p50 us':>13s} {'tree p50 us':>12s} "
        f"{'tree recall@10':>15s}"
    )
    for lo, hi in BUCKETS:
        m = (sizes >= lo) & (sizes <= hi)
        if not m.any():
            continue
        e, t = rows["exact"], rows["tree"]
        print(
            f"{lo:>6d}-{hi if hi < 10**9 else 'max':>7} {int(m.sum()):>8d} "
            f"{np.percentile(e[0][m], 50):>13.1f} {np.percentile(t[0][m], 50):>12.1f} "
            f"{t[1][m].mean():>15.3f}"
        )
    print(f"default exact_search_threshold: {SearchParams().exact_search_threshold}")


if __name__ == "__main__":
    main()
