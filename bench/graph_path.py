"""Graph path vs tree vs exact scan, by filter size; unfiltered vs one hnswlib index; AND of two
labels vs the faiss filter baseline. One query per call, one thread, p50 µs and recall@10
(ties counted). Run: `python -m bench.graph_path [--queries 300] [--synthetic N]`.

Every path is forced here (planner internals), so the crossovers the planner uses can be read
off the tables.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import faiss
import hnswlib
import numba
import numpy as np

from bench.baselines import CuratorBaseline, SharedFaissFilter
from bench.datasets import DATA, Dataset, debian, synthetic
from bench.metrics import recall_at_k, true_distances
from curator import SearchParams
from curator.index import planner as P

_K = 10


def _time(fn: Any, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    ids, dist, lat = [], [], []
    for q in queries:
        t = time.perf_counter()
        i, d = fn(q[None])
        lat.append(time.perf_counter() - t)
        ids.append(i)
        dist.append(d)
    return np.vstack(ids), np.vstack(dist), float(np.median(lat) * 1e6)


def _forced(idx: Any, path: str, slots: np.ndarray, p: SearchParams) -> Any:
    def run(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        qq = idx._prepare(q, "queries")
        if path == "tree-tenant":
            s, d, _ = P._tree(idx, idx._tenant_tree(str(slots)).view(idx._tree), qq, _K, p)
        else:
            s, d, _ = P._run(idx, path, slots_of[0], qq, _K, p, len(slots_of[0]))
        ids, dist, _ = idx._finish(s, d)
        return ids, dist

    slots_of = [slots]
    return run


def by_size(idx: Any, ds: Dataset, n: int, edges: list[int], label: str) -> list[str]:
    """Rows: size bucket x path x setting."""
    sizes = np.array([len(x) for x in ds.tenant_lists()])
    qsize = sizes[ds.query_tenant]
    rows = []
    for lo, hi in itertools.pairwise(edges):
        qs = np.flatnonzero((qsize > lo) & (qsize <= hi))[:n]
        if not len(qs):
            continue
        med = int(np.median(qsize[qs]))
        for path, settings in (
            ("exact", [128]),
            ("tree", [64, 128, 256, 512]),
            ("graph", [32, 64, 128, 256]),
        ):
            for ef in settings:
                p = SearchParams(search_ef=ef if path != "graph" else 2 * ef)
                ids, dist, p50 = [], [], []
                for t in np.unique(ds.query_tenant[qs]):
                    rows_t = qs[ds.query_tenant[qs] == t]
                    tt = idx._tenant_tree(str(t))
                    slots = tt.view(idx._tree).slots
                    fn = (
                        _forced(idx, "tree-tenant", t, p)
                        if path == "tree"
                        else _forced(idx, path, slots, p)
                    )
                    i, d, lat = _time(fn, ds.queries[rows_t])
                    ids.append(i)
                    dist.append(d)
                    p50 += [lat] * len(rows_t)
                order = np.argsort(
                    np.concatenate(
                        [qs[ds.query_tenant[qs] == t] for t in np.unique(ds.query_tenant[qs])]
                    )
                )
                ids_a = np.vstack(ids)[order]
                true_d = true_distances(ds.base, ds.metric, ds.queries[qs], ids_a)
                r = recall_at_k(ids_a, ds.gt[qs], ds.gt_dist[qs], true_d, _K)
                rows.append(
                    f"| {label} {lo + 1}-{hi} (median {med}, {med / len(ds.base):.1%}) | {path} | "
                    f"{ef if path != 'exact' else '-'} | {r:.3f} | {np.median(p50):.0f} |"
                )
                print(rows[-1], flush=True)
    return rows


def unfiltered(
    idx: Any, base: np.ndarray, queries: np.ndarray, gt: np.ndarray, n: int
) -> list[str]:
    q = queries[:n]
    gt = gt[:n]
    rows = []
    every = np.flatnonzero(idx._store.live[: idx._store.high]).astype(np.int32)
    for ef in (16, 24, 32, 64, 128, 256):
        fn = _forced(idx, "graph", every, SearchParams(search_ef=2 * ef))
        ids, _, p50 = _time(fn, q)
        r = np.mean([len(set(a[:_K]) & set(b[:_K])) / _K for a, b in zip(ids, gt, strict=True)])
        rows.append(f"| curator graph (numba, 1 thread) | {ef} | {r:.3f} | {p50:.0f} |")
        print(rows[-1], flush=True)
    h = hnswlib.Index(space="ip", dim=base.shape[1])
    h.init_index(max_elements=len(base), ef_construction=100, M=16)
    t = time.time()
    h.add_items(base, np.arange(len(base)), num_threads=2)
    print(f"hnswlib build {time.time() - t:.1f} s", flush=True)
    for ef in (16, 24, 32, 64, 128, 256):
        h.set_ef(ef)
        ids, _, p50 = _time(lambda x: h.knn_query(x, _K, num_threads=1), q)
        r = np.mean([len(set(a[:_K]) & set(b[:_K])) / _K for a, b in zip(ids, gt, strict=True)])
        rows.append(f"| hnswlib M16 (1 thread) | {ef} | {r:.3f} | {p50:.0f} |")
        print(rows[-1], flush=True)
    return rows


def and_of_labels(idx: Any, ds: Dataset, n: int) -> list[str]:
    """Queries with two or more labels: AND of their first two, against exact truth."""
    ptr = np.load(DATA / "query_labels_indptr.npy")
    ind = np.load(DATA / "query_labels_indices.npy")
    lists = ds.tenant_lists()
    qs = [i for i in range(len(ds.queries)) if ptr[i + 1] - ptr[i] >= 2][:n]
    pairs = [(int(ind[ptr[i]]), int(ind[ptr[i] + 1])) for i in qs]
    sets = [np.intersect1d(lists[a], lists[b]) for a, b in pairs]
    q = ds.queries[qs]
    gt = np.full((len(qs), _K), -1, np.int64)
    gd = np.full((len(qs), _K), np.inf, np.float32)
    for j, s in enumerate(sets):
        dd = 1 - ds.base[s] @ q[j]
        o = np.argsort(dd)[:_K]
        gt[j, : len(o)], gd[j, : len(o)] = s[o], dd[o]
    sizes = np.array([len(s) for s in sets])
    rows = [
        f"(AND sets: {len(qs)} queries, size median {int(np.median(sizes))}, max {sizes.max()})"
    ]
    print(rows[0], flush=True)
    for ef in (16, 32, 64, 128, 256):
        p = SearchParams(search_ef=ef)
        out_i, out_d, lat, paths = [], [], [], []
        for j, (a, b) in enumerate(pairs):
            t = time.perf_counter()
            i, d, plan = idx.search(
                str(a), q[j : j + 1], _K, p, where=_and(str(a), str(b)), explain=True
            )
            lat.append(time.perf_counter() - t)
            out_i.append(i)
            out_d.append(d)
            paths.append(plan.path)
        ids_a = np.vstack(out_i)
        r = recall_at_k(ids_a, gt, gd, true_distances(ds.base, ds.metric, q, ids_a), _K)
        mix = {x: paths.count(x) for x in sorted(set(paths))}
        rows.append(
            f"| curator search(where=AND) | search_ef {ef} | {r:.3f} | "
            f"{np.median(lat) * 1e6:.0f} | {len(lat) / sum(lat):.0f} | {mix} |"
        )
        print(rows[-1], flush=True)
    faiss.omp_set_num_threads(1)
    for kind in ("ivf", "hnsw"):
        base = SharedFaissFilter(kind)
        t = time.time()
        base.build(ds)
        print(f"faiss {kind} build {time.time() - t:.1f} s", flush=True)
        for setting in base.settings:
            out_i, out_d, lat = [], [], []
            for j, s in enumerate(sets):
                bits = np.zeros(len(ds.base), bool)
                bits[s] = True
                packed = np.packbits(bits, bitorder="little")
                t = time.perf_counter()
                sel = faiss.IDSelectorBitmap(len(ds.base), faiss.swig_ptr(packed))
                if kind == "hnsw":
                    sp: Any = faiss.SearchParametersHNSW(sel=sel, efSearch=setting["efSearch"])
                else:
                    sp = faiss.SearchParametersIVF(sel=sel, nprobe=setting["nprobe"])
                dd, ii = base.index.search(q[j : j + 1], _K, params=sp)
                lat.append(time.perf_counter() - t)
                out_i.append(ii.astype(np.int64))
                out_d.append(np.where(ii >= 0, 1 - dd, np.inf).astype(np.float32))
            ids_a = np.vstack(out_i)
            r = recall_at_k(ids_a, gt, gd, true_distances(ds.base, ds.metric, q, ids_a), _K)
            rows.append(
                f"| faiss {kind} + IDSelectorBitmap (selector build excluded) | {setting} | "
                f"{r:.3f} | {np.median(lat) * 1e6:.0f} | {len(lat) / sum(lat):.0f} | - |"
            )
            print(rows[-1], flush=True)
    return rows


def _and(a: str, b: str) -> Any:
    from curator.predicate import And, Label

    return And(Label(a), Label(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--synthetic", type=int, default=0, help="also a synthetic set of N vectors")
    ap.add_argument("--skip", default="", help="comma list of: tenant,label,unfiltered,and")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    numba.set_num_threads(1)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)
    for kind in ("tenant", "label"):
        needed = {"tenant": "unfiltered", "label": "and"}[kind]  # what else needs this set
        if kind in skip and needed in skip:
            continue
        ds = debian(kind)
        cb = CuratorBaseline()
        t = time.time()
        cb.build(ds)
        idx = cb.index
        graph = idx.build_graph()  # linked up front, every pending vector too: timed searches
        if graph is not None:  # then walk the graph only
            graph.link_pending(idx._store)
        mem = idx.memory_usage()
        print(
            f"debian-{kind}: build+train {time.time() - t:.1f} s; graph {mem['graph'] / 2**20:.1f} "
            f"MiB of {mem['total'] / 2**20:.1f} MiB (vectors {mem['vectors'] / 2**20:.1f})",
            flush=True,
        )
        if kind not in skip:
            by_size(idx, ds, a.queries, [0, 500, 1000, 2000, 4000, 7000, 20000], kind)
        if kind == "tenant" and "unfiltered" not in skip:
            gt = np.load(DATA / "gt_global_ids.npy")
            unfiltered(idx, ds.base, ds.queries, gt, a.queries)
        if kind == "label" and "and" not in skip:
            and_of_labels(idx, ds, a.queries)
    if a.synthetic:
        ds = synthetic(n=a.synthetic, d=128, n_tenants=200, n_queries=500)
        cb = CuratorBaseline()
        t = time.time()
        cb.build(ds)
        print(f"synthetic-{a.synthetic}: build+train {time.time() - t:.1f} s", flush=True)
        by_size(cb.index, ds, a.queries, [0, 1000, 2000, 5000, 10000, 50000, 10**7], "synthetic")
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)


if __name__ == "__main__":
    main()
