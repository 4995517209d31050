"""Child process of tests/test_recovery.py: writes batches forever, acknowledging each.

Usage: python tests/crash_writer.py DATA_DIR START_BATCH [cache]
Prints "ack <batch>" after each upsert (and grant, on even batches) returned, or, in cache
mode, after each semantic-cache store. The parent kills it with SIGKILL at a random moment.
"""

from __future__ import annotations

import sys

import numpy as np

from curator.config import DatabaseConfig, IndexConfig
from curator.database import Database
from curator.errors import AlreadyExists

DIM = 8
BATCH = 40


def batch_vectors(b: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(b)
    return np.arange(b * BATCH, (b + 1) * BATCH, dtype=np.uint64), rng.standard_normal(
        (BATCH, DIM)
    ).astype(np.float32)


def cache_embedding(b: int) -> np.ndarray:
    return np.random.default_rng(10_000 + b).standard_normal(DIM).astype(np.float32)


def main() -> None:
    data_dir, start = sys.argv[1], int(sys.argv[2])
    cache_mode = sys.argv[3:] == ["cache"]
    cfg = DatabaseConfig(data_dir=data_dir, snapshot_every_writes=7, snapshot_every_seconds=0.3)
    db = Database(cfg)
    for t in ("owner", "reader"):
        try:
            db.create_tenant(t)
        except AlreadyExists:
            pass
    try:
        db.create_collection("c", DIM, "l2", IndexConfig(train_min_vectors=400, max_sl_size=16))
    except AlreadyExists:
        pass
    db.allow_sharing("owner", "reader")
    print("ready", flush=True)
    b = start
    while cache_mode:
        db.cache_store(
            f"prompt {b}", cache_embedding(b), f"answer {b}" * 50, tenant="owner", model="m"
        )
        print(f"ack {b}", flush=True)
        b += 1
    while True:
        ids, x = batch_vectors(b)
        db.upsert("c", ids, x, documents=[f"b{b}"] * BATCH, tenant="owner")
        if b % 2 == 0:
            db.grant("c", ids, "reader", tenant="owner")
        print(f"ack {b}", flush=True)
        b += 1


if __name__ == "__main__":
    main()
