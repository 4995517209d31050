"""Curator vs real peer engines (Qdrant edge, LanceDB, Chroma, pgvector, Milvus Lite) and the
per-tenant hnswlib baseline, on the same data, in one run.

    python -m bench.run_peers --dataset debian|debian-labels|synthetic|all [--scale tiny|full]
        [--n 200000] [--engines curator qdrant-edge ...] [--budget 300] [--queries 1000]

Each engine runs in a child process of its own (same interpreter, same malloc policy), so its
memory is measured from a clean start and a run that overstays its hard timeout is killed and
reported as cut short; a peer whose package is missing is reported as skipped. Per engine:
build/ingest time; memory: RSS delta of this process plus the PSS delta of the engine's server
processes (PostgreSQL), after the build and after the query sweep; bytes on disk; recall@10
(distances recomputed here, unreadable ids never count) with single-query latency p50/p99 over
a sweep of the engine's query knob, and batch QPS (each tenant's queries in one call); insert
latency one vector at a time and in one batch of 2,000. The sweep stops once it has used
`--budget` seconds (what was skipped is recorded). Markdown tables, JSON and PNG plots (recall
vs QPS per dataset, memory bars) go to bench/out/peers/; the headline compares Curator with the
best peer at recall@10 0.9 and 0.95.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import baselines, peers
from bench.datasets import Dataset, debian, shrink, synthetic
from bench.metrics import Timer, latency_stats, recall_at_k, rss, trim_memory, true_distances
from bench.peers.report import plot, plot_memory, report
from bench.run_index import batch_qps, insert_batch, insert_latency, warm_up

OUT = Path(__file__).resolve().parent / "out" / "peers"
BASELINES = ("curator", "per-tenant hnswlib")
ENGINES = (*BASELINES, *peers.PEERS)
DATASETS = ("debian", "debian-labels", "synthetic")

log = logging.getLogger(__name__)


def load(name: str, scale: str, n: int, n_queries: int) -> Dataset:
    """The dataset `name` at `scale` (tiny: Debian cut to ~8k vectors of whole tenants, 20k x 128
    synthetic with 50 tenants, 200 queries)."""
    if name.startswith("debian"):
        ds = debian("tenant" if name == "debian" else "label")
        if scale == "tiny":
            return shrink(ds, 8000, min(n_queries, 200))
        return ds
    if scale == "tiny":
        return synthetic(20_000, n_tenants=50, n_queries=min(n_queries, 200))
    return synthetic(n, n_tenants=1000, n_queries=1000)


def make(engine: str, root: str | None) -> Any:
    if engine == "curator":
        return baselines.CuratorBaseline()
    if engine == "per-tenant hnswlib":
        return baselines.PerTenantHNSW()
    return peers.create(engine, root)


def _server_pss(method: Any) -> int:
    import psutil

    total = 0
    for pid in method.server_pids() if hasattr(method, "server_pids") else []:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return total


def _disk_bytes(method: Any, root: str) -> int | None:
    if hasattr(method, "disk_bytes"):
        return int(method.disk_bytes())
    if isinstance(method, baselines.CuratorBaseline):
        path = Path(root) / "curator.snapshot"
        method.index.save(path)
        size = path.stat().st_size
        path.unlink()
        return size
    return None


def measure(
    engine: str,
    ds: Dataset,
    n_queries: int,
    budget_s: float,
    root: str | None = None,
    warm: bool = True,
) -> dict[str, Any]:
    """Build `engine` on ds and measure it (see the module docstring); JSON-ready dict."""
    root = root or tempfile.mkdtemp(prefix="run-peers-")
    if engine == "curator" and warm:
        warm_up()  # compiled kernels and thread pools load once per process, not per index
    method = make(engine, root)  # imports the engine and starts its server, before the baseline
    version = peers.versions(engine) if engine in peers.PEERS else "this repository"
    if hasattr(method, "versions"):
        version += f" ({method.versions()})"
    load_before = os.getloadavg()[0]  # the machine is shared: record how busy it was
    trim_memory()
    r0, s0 = rss(), _server_pss(method)
    with Timer() as build:
        method.build(ds)
        if isinstance(method, baselines.CuratorBaseline):
            # Large tenants' own links, which searches would otherwise build in the
            # background during the sweep: part of the build, as Qdrant's optimize() (its
            # per-tenant graphs) is part of Qdrant's. No global graph: no tenant of these sets
            # reaches its share (Qdrant is set up without one either, m=0).
            with Timer() as link:
                method.link(shared_graph=False)
    out: dict[str, Any] = {
        "engine": engine,
        "version": version,
        "build_s": build.seconds,
        "link_s": link.seconds if isinstance(method, baselines.CuratorBaseline) else None,
        "rss_build": rss() - r0 + _server_pss(method) - s0,
        "disk_bytes": _disk_bytes(method, root),
        "sweep": [],
        "skipped_settings": [],
    }
    if hasattr(method, "nbytes"):
        out["struct_bytes"] = method.nbytes()
    nq = min(n_queries, len(ds.queries), getattr(method, "query_cap", n_queries))
    out["queries"] = nq
    qs = np.arange(nq)
    started = time.perf_counter()
    warm = qs if nq <= 200 or not getattr(method, "query_cap", 0) else qs[:20]
    for i in warm:  # one-time costs (caches, compiled kernels, planner) before any timing
        method.search(int(ds.query_tenant[i]), ds.queries[i : i + 1], 10, method.settings[0])
    for setting in method.settings:
        if time.perf_counter() - started > budget_s:
            out["skipped_settings"].append(setting)
            continue
        lat, ids = [], np.full((nq, 10), -1, np.int64)
        for i in qs:
            t0 = time.perf_counter()
            a, _ = method.search(int(ds.query_tenant[i]), ds.queries[i : i + 1], 10, setting)
            lat.append(time.perf_counter() - t0)
            ids[i] = a[0]
        readable = ds.can_read(ids, ds.query_tenant[qs])
        truth = np.where(readable, true_distances(ds.base, ds.metric, ds.queries[qs], ids), np.inf)
        out["sweep"].append(
            {
                "setting": setting,
                "recall": recall_at_k(ids, ds.gt[qs], ds.gt_dist[qs], truth),
                **latency_stats(lat),
                "unreadable": int(((ids >= 0) & ~readable).sum()),
                "batch_qps": batch_qps(method, ds, qs, setting),
            }
        )
    out["sweep_s"] = time.perf_counter() - started
    out["rss_serve"] = rss() - r0 + _server_pss(method) - s0
    out["insert_us"] = insert_latency(method, ds, n=100 if getattr(method, "query_cap", 0) else 500)
    out["insert_batch_us"] = insert_batch(method, ds)
    out["loadavg"] = [load_before, os.getloadavg()[0]]
    if hasattr(method, "close"):
        method.close()
    return out


def _child_env() -> dict[str, str]:
    # The malloc policy of run_index: large frees go back to the OS, so RSS deltas are the
    # structure's, whatever ran before in the process.
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}


def run_isolated(
    engine: str, args: argparse.Namespace, dataset: str, hard_timeout_s: float
) -> dict[str, Any]:
    """measure() in a child process; killed (whole process group) after hard_timeout_s."""
    with tempfile.TemporaryDirectory(prefix="run-peers-") as root:
        result = Path(root) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.run_peers",
            "--child",
            engine,
            "--dataset",
            dataset,
            "--scale",
            args.scale,
            "--n",
            str(args.n),
            "--queries",
            str(args.queries),
            "--budget",
            str(args.budget),
            "--result",
            str(result),
        ]
        proc = subprocess.Popen(cmd, env=_child_env(), start_new_session=True)
        try:
            code = proc.wait(timeout=hard_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"engine": engine, "status": f"cut short: killed after {hard_timeout_s:.0f} s"}
        if code != 0 or not result.exists():
            return {"engine": engine, "status": f"failed (exit code {code})"}
        return {**json.loads(result.read_text()), "status": "ok"}


# ----------------------------------------------------------------------------- driver


def run(
    datasets: list[str],
    engines: list[str],
    args: argparse.Namespace,
    isolate: bool = True,
    out: Path = OUT,
    loader: Callable[[str], Dataset] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Measure every engine on every dataset; write tables, JSON and plots under out. In
    process (isolate=False) with a given loader, this is the path the tests drive."""
    out.mkdir(parents=True, exist_ok=True)
    have = peers.available()
    all_results: dict[str, list[dict[str, Any]]] = {}
    for name in datasets:
        # load() also fills the synthetic cache that the child processes read
        ds = loader(name) if loader else load(name, args.scale, args.n, args.queries)
        results = []
        for engine in engines:
            if engine in peers.PEERS and not have[engine]:
                results.append(
                    {
                        "engine": engine,
                        "status": f"skipped: not installed ({peers.versions(engine)})",
                    }
                )
                continue
            print(f"[{ds.name}] {engine} ...", flush=True)
            if isolate:
                res = run_isolated(engine, args, name, args.hard_timeout)
            else:
                res = measure(engine, ds, args.queries, args.budget, warm=loader is None)
                res["status"] = "ok"
            results.append(res)
            print(f"[{ds.name}] {engine}: {res.get('status')}", flush=True)
            partial = out / f"{_tag(ds, args.scale)}.partial.json"
            partial.write_text(json.dumps(results, indent=1, default=str))  # survives a kill
        tag = _tag(ds, args.scale)
        if getattr(args, "merge", False) and (out / f"{tag}.json").exists():
            fresh = {r["engine"] for r in results}
            old = json.loads((out / f"{tag}.json").read_text())
            kept = {r["engine"]: r for r in old if r["engine"] not in fresh}
            by = {**kept, **{r["engine"]: r for r in results}}
            results = [by[e] for e in ENGINES if e in by]
        all_results[tag] = results
        text = report(ds, results, args.scale)
        print(text, flush=True)
        (out / f"{tag}.md").write_text(text)
        (out / f"{tag}.json").write_text(json.dumps(results, indent=1, default=str))
        plot(tag, results, out / f"{tag}-recall-qps.png")
    plot_memory(all_results, out / f"memory-{args.scale}-{'-'.join(datasets)}.png")
    return all_results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="all", choices=[*DATASETS, "all"])
    ap.add_argument("--scale", default="full", choices=["tiny", "full"])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors (full scale)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of query sweep")
    ap.add_argument(
        "--hard-timeout", type=float, default=2400.0, help="kill an engine's run after this"
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="re-render tables and plots from the JSON of earlier runs in bench/out/peers",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep earlier results of engines not run now (from the dataset's JSON)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        ds = load(args.dataset, args.scale, args.n, args.queries)
        res = measure(args.child, ds, args.queries, args.budget)
        Path(args.result).write_text(json.dumps(res, default=str))
        return
    datasets = list(DATASETS) if args.dataset == "all" else [args.dataset]
    if args.report_only:
        rerender(datasets, args)
        return
    run(datasets, args.engines, args)


def _tag(ds: Dataset, scale: str) -> str:
    return ds.name if ds.name.endswith(f"-{scale}") else f"{ds.name}-{scale}"


def rerender(datasets: list[str], args: argparse.Namespace, out: Path = OUT) -> None:
    all_results = {}
    for name in datasets:
        ds = load(name, args.scale, args.n, args.queries)
        tag = _tag(ds, args.scale)
        results = json.loads((out / f"{tag}.json").read_text())
        all_results[tag] = results
        text = report(ds, results, args.scale)
        print(text)
        (out / f"{tag}.md").write_text(text)
        plot(tag, results, out / f"{tag}-recall-qps.png")
    plot_memory(all_results, out / f"memory-{args.scale}-{'-'.join(datasets)}.png")


if __name__ == "__main__":
    main()
