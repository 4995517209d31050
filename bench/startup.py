"""Start-up time of a database: loading the index snapshot vs rebuilding it from LMDB.

    python -m bench.startup [--n 1000000] [--dim 128] [--tenants 1000]

Builds a database of `n` seeded synthetic vectors (clustered, owners of Zipf-like sizes, a
third of the vectors shared with a second tenant), closes it (which writes the snapshots),
then times (a) opening it from the snapshot and (b) opening it after the snapshot files are
moved away, which rebuilds every index from the stored vectors. Prints both and the ratio
(target: snapshot load >= 10x faster than a rebuild).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from curator.config import DatabaseConfig
from curator.database import Database


def load(db: Database, n: int, dim: int, n_tenants: int, rng: np.random.Generator) -> np.ndarray:
    """Tenants t0.. and collection "bench" of `n` seeded clustered vectors, owners of Zipf-like
    sizes, loaded in one bulk load (trained once); returns each vector's owner (n,)."""
    centers = rng.standard_normal((256, dim)).astype(np.float32) * 4
    weights = 1.0 / np.arange(1, n_tenants + 1) ** 0.8
    owner = rng.choice(n_tenants, n, p=weights / weights.sum())
    for t in range(n_tenants):
        db.create_tenant(f"t{t}")
    db.create_collection("bench", dim, "l2")
    order = np.argsort(owner, kind="stable")
    bounds = np.flatnonzero(np.diff(owner[order])) + 1
    with db.bulk_load("bench"):
        for rows in tqdm(np.split(order, bounds), desc="loading", unit="tenant"):
            x = centers[rng.integers(0, 256, len(rows))] + rng.standard_normal(
                (len(rows), dim)
            ).astype(np.float32)
            db.upsert("bench", rows.astype(np.uint64), x, tenant=f"t{owner[rows[0]]}")
    return owner


def build(path: Path, n: int, dim: int, n_tenants: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cfg = DatabaseConfig(
        data_dir=str(path), sync=False, snapshot_every_writes=0, snapshot_every_seconds=0
    )
    with Database(cfg, background=False) as db:
        owner = load(db, n, dim, n_tenants, rng)
        shared = np.flatnonzero(rng.random(n) < 1 / 3)
        second = (owner[shared] + 1 + rng.integers(0, n_tenants - 1, len(shared))) % n_tenants
        pairs = np.stack([second, owner[shared]], 1)
        for t, o in tqdm(np.unique(pairs, axis=0), desc="granting", unit="grant"):
            ids = shared[(second == t) & (owner[shared] == o)]
            db.grant("bench", ids.astype(np.uint64), f"t{t}", owner=f"t{o}")
        db.snapshot("bench")


def time_open(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    db = Database(DatabaseConfig(data_dir=str(path)), background=False)
    elapsed = time.perf_counter() - t0
    n = db.count("bench")
    db.close(snapshot=False)
    return elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="curator-startup-"))
    try:
        t0 = time.perf_counter()
        build(root, args.n, args.dim, args.tenants)
        print(
            f"built {args.n} x {args.dim} with {args.tenants} tenants in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        snap_s, n1 = time_open(root)
        aside = root / "snapshots-aside"
        shutil.move(root / "snapshots", aside)
        (root / "snapshots").mkdir()
        rebuild_s, n2 = time_open(root)
        assert n1 == n2 == args.n, (n1, n2)
        print(f"open from snapshot: {snap_s:.2f} s")
        print(f"open with rebuild:  {rebuild_s:.2f} s")
        ratio = rebuild_s / snap_s
        print(
            f"rebuild / snapshot: {ratio:.1f}x (target >= 10x: "
            f"{'PASS' if ratio >= 10 else 'NOT MET'})"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
