"""Why the search loop is compiled: the same tenant search written with numpy calls per node.

`python -m bench.kernel_vs_numpy` builds the index on the Debian data, then times one query at a
time on the large tenants (> exact_search_threshold vectors) with (a) the numba kernel and
(b) a numpy version of the same algorithm (best-first over the tenant's sub-tree, one
vectorised distance computation per scanned shortlist, the same search_ef stop rule), and
prints both with their recall, so the ratio is measured, not assumed.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from bench.baselines import CuratorBaseline
from bench.datasets import debian
from curator import SearchParams
from curator.index import kernels as K


def numpy_search(q, k, ef, view, tree, store):
    """Best-first search of one query (d,) over a TenantView, in numpy + heapq."""
    cent, vecs = tree.centroids, store.vectors
    frontier = [(0.0, 0)]
    top_d = np.empty(0, np.float32)
    top_s = np.empty(0, np.int64)
    while frontier:
        _, i = heapq.heappop(frontier)
        lo, hi = view.sl_ptr[i], view.sl_ptr[i + 1]
        if hi > lo:
            slots = view.slots[lo:hi]
            d = -(vecs[slots] @ q)
            worst = top_d.max() if len(top_d) == ef else np.inf
            if len(top_d) == ef and d.min() >= worst:
                break
            top_d = np.concatenate([top_d, d])
            top_s = np.concatenate([top_s, slots])
            if len(top_d) > ef:
                keep = np.argpartition(top_d, ef - 1)[:ef]
                top_d, top_s = top_d[keep], top_s[keep]
        else:
            kids = view.child[view.child_ptr[i] : view.child_ptr[i + 1]]
            scores = tree.cnorm[view.node[kids]] - 2 * (cent[view.node[kids]] @ q)
            for c, s in zip(kids.tolist(), scores.tolist(), strict=True):
                heapq.heappush(frontier, (s, c))
    order = np.argsort(top_d)[:k]
    return top_s[order]


def main() -> None:
    ds = debian("tenant")
    method = CuratorBaseline()
    method.build(ds)
    idx, queries, qt, gt = method.index, ds.queries, ds.query_tenant, ds.gt
    p = SearchParams()
    tree, store = idx._tree, idx._store
    big = [i for i in range(len(queries)) if idx.tenant_size(str(qt[i])) > p.exact_search_threshold]
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    crad = tree.mean_sq_radius()
    rows = {"numba kernel": [], "numpy per node": []}
    recall = {"numba kernel": 0.0, "numpy per node": 0.0}
    for i in big:
        tt = idx._tenant_tree(str(qt[i]))
        v = tt.view(tree)
        q = np.ascontiguousarray(qn[i : i + 1], np.float32)
        truth = set(gt[i, :10].tolist())
        t0 = time.perf_counter()
        s, _, _ = K.tree_batch(
            q,
            10,
            p.search_ef,
            1,  # patience 1: Curator v2's rule, which the numpy version follows
            0,
            np.float32(0),
            True,
            v.node,
            v.child_ptr,
            v.child,
            v.sl_ptr,
            v.slots,
            tree.centroids,
            tree.cnorm,
            crad,
            store.vectors,
            store.vnorm,
        )
        rows["numba kernel"].append(time.perf_counter() - t0)
        recall["numba kernel"] += len(truth & set(store.ext_id[s[0]].astype(int).tolist())) / 10
        t0 = time.perf_counter()
        s2 = numpy_search(q[0], 10, p.search_ef, v, tree, store)
        rows["numpy per node"].append(time.perf_counter() - t0)
        recall["numpy per node"] += len(truth & set(store.ext_id[s2].astype(int).tolist())) / 10
    print(
        f"{len(big)} queries on tenants above {p.exact_search_threshold} vectors, "
        f"search_ef {p.search_ef}, beam 0"
    )
    for name, lat in rows.items():
        us = np.array(lat) * 1e6
        print(
            f"{name:16s} p50 {np.percentile(us, 50):7.1f} us  p99 {np.percentile(us, 99):7.1f} us"
            f"  recall@10 {recall[name] / len(big):.3f}"
        )
    ratio = np.median(rows["numpy per node"]) / np.median(rows["numba kernel"])
    print(f"numpy / numba p50 latency: {ratio:.1f}x")


if __name__ == "__main__":
    main()
