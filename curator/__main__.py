"""`python -m curator [demo|backup]`: command-line tools of the core.

`demo` (the default) is an end-to-end demo of the index on the Debian dataset: it loads the
real multi-tenant data (tenants = Debian maintainers) from `--data` (or CURATOR_DEMO_DATA; not
CURATOR_DATA_DIR, which is the server's database folder), inserts every vector with
its owner, searches the held-out queries within their tenant and prints recall@10
against the shipped ground truth and the per-query latency. Falls back to a small synthetic
set when the data directory is absent.

`backup --data-dir DIR DEST` writes a consistent, compacted copy of a database (which may be
in use by a server at the same time) to the new folder DEST; DEST opens as a database.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from curator import CuratorError, CuratorIndex, SearchParams
from curator.config import DatabaseConfig
from curator.storage.snapshotter import copy_database
from curator.storage.store import Store

log = logging.getLogger("curator.demo")

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian"


def _load(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if (data / "base.npy").exists():
        base = np.load(data / "base.npy").astype(np.float32)
        return (
            base,
            np.load(data / "base_tenant.npy"),
            np.load(data / "queries.npy"),
            np.load(data / "query_tenant.npy"),
            np.load(data / "gt_ids.npy"),
        )
    log.warning("no dataset at %s: using a synthetic one", data)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20_000, 64)).astype(np.float32)
    tenant = rng.integers(0, 50, len(base)).astype(np.int32)
    qt = rng.integers(0, 50, 200).astype(np.int32)
    queries = rng.standard_normal((200, 64)).astype(np.float32)
    gt = np.full((200, 10), -1)
    for i in range(200):
        rows = np.flatnonzero(tenant == qt[i])
        b = base[rows] / np.linalg.norm(base[rows], axis=1, keepdims=True)
        gt[i] = rows[np.argsort(-(b @ queries[i]))[:10]]
    return base, tenant, queries, qt, gt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m curator", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="index demo on the Debian data (default)")
    backup = sub.add_parser("backup", help="consistent copy of a database")
    backup.add_argument("--data-dir", default=DatabaseConfig.data_dir)
    backup.add_argument("dest", type=Path)
    for p in (ap, demo):
        p.add_argument(
            "--data", type=Path, default=Path(os.environ.get("CURATOR_DEMO_DATA", _DEFAULT_DATA))
        )
        p.add_argument("--search-ef", type=int, default=SearchParams.search_ef)
        p.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "backup":
        src = Path(args.data_dir)
        store = Store(src / "lmdb", readonly=True)
        try:
            copy_database(store, src / "snapshots", args.dest)
        finally:
            store.close()
        log.info("backed up %s to %s", args.data_dir, args.dest)
        return 0
    return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    base, tenant, queries, qt, gt = _load(args.data)
    idx = CuratorIndex(base.shape[1], metric="cosine")
    t0 = time.perf_counter()
    order = np.argsort(tenant, kind="stable")
    bounds = np.flatnonzero(np.diff(tenant[order])) + 1
    for rows in tqdm(np.split(order, bounds), desc="inserting tenants", unit="tenant"):
        idx.insert(rows.astype(np.uint64), base[rows], owner=f"tenant-{tenant[rows[0]]}")
    log.info(
        "inserted %d vectors for %d tenants in %.1f s",
        len(idx),
        len(idx.tenants()),
        time.perf_counter() - t0,
    )

    params = SearchParams(search_ef=args.search_ef)
    nq = min(args.queries, len(queries))
    hits, lat = 0.0, []
    for i in range(nq):
        t1 = time.perf_counter()
        ids, _ = idx.search(f"tenant-{qt[i]}", queries[i : i + 1], k=10, params=params)
        lat.append(time.perf_counter() - t1)
        truth = set(gt[i, :10][gt[i, :10] >= 0].tolist())
        hits += len(truth & set(ids[0].tolist())) / max(1, len(truth))
    lat_us = np.array(lat[10:] or lat) * 1e6
    sys.stdout.write(
        f"recall@10 {hits / nq:.4f} over {nq} queries; latency p50 {np.percentile(lat_us, 50):.0f}"
        f" us, p99 {np.percentile(lat_us, 99):.0f} us; memory "
        f"{idx.memory_usage()['total'] / 2**20:.1f} MiB\n"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CuratorError as e:
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)
