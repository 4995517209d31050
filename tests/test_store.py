"""LMDB store: the map grows by itself, a full or read-only store fails cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.config import DatabaseConfig
from curator.database import Database
from curator.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from curator.storage.store import Store


@pytest.mark.timeout(60)
def test_map_grows_before_it_fills(tmp_path: Path) -> None:
    cfg = DatabaseConfig(data_dir=str(tmp_path), map_size=1 << 16)  # 64 KiB to start
    with Database(cfg, background=False) as db:
        db.create_tenant("a")
        db.create_collection("c", 64)
        x = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
        for i in range(0, 2000, 500):
            db.upsert(
                "c", np.arange(i, i + 500), x[i : i + 500], documents=["d" * 200] * 500, tenant="a"
            )
        assert db.count("c") == 2000
        assert db.store.stats()["map_size"] > 1 << 16


@pytest.mark.timeout(60)
def test_full_store_is_a_clear_error_and_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    cfg = DatabaseConfig(data_dir=str(tmp_path), map_size=1 << 20, max_map_size=2 << 20)
    x = np.random.default_rng(0).standard_normal((20_000, 32)).astype(np.float32)
    acked = 0
    with Database(cfg, background=False) as db:
        db.create_tenant("a")
        db.create_collection("c", 32)
        with pytest.raises(ResourceExhausted, match=r"max_map_size|full"):
            for i in range(0, 20_000, 1000):
                db.upsert("c", np.arange(i, i + 1000), x[i : i + 1000], tenant="a")
                acked = i + 1000
        assert db.count("c") == acked > 0
    with Database(
        DatabaseConfig(data_dir=str(tmp_path), max_map_size=2 << 20), background=False
    ) as db:
        assert db.count("c") == acked
        np.testing.assert_array_equal(db.get("c", np.arange(acked), owner="a").vectors, x[:acked])


@pytest.mark.timeout(60)
def test_read_only_database_refuses_writes(tmp_path: Path) -> None:
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db:
        db.create_tenant("a")
        db.create_collection("c", 4)
        db.upsert("c", [1], np.ones((1, 4), np.float32), tenant="a")
    ro = Database(DatabaseConfig(data_dir=str(tmp_path)), readonly=True)
    try:
        assert ro.count("c") == 1
        with pytest.raises(FailedPrecondition, match="read-only"):
            ro.upsert("c", [2], np.ones((1, 4), np.float32), tenant="a")
        assert ro.count("c") == 1
    finally:
        ro.close()


@pytest.mark.timeout(60)
def test_rejected_batch_leaves_no_trace(tmp_path: Path) -> None:
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db:
        db.create_tenant("a")
        db.create_collection("c", 4)
        db.upsert("c", [1, 2], np.ones((2, 4), np.float32), tenant="a")
        seq = db.server_info().seq
        bad = np.ones((3, 4), np.float32)
        bad[2, 1] = np.nan
        cases = [
            (InvalidArgument, lambda: db.upsert("c", [3, 4, 5], bad, tenant="a")),
            (
                InvalidArgument,
                lambda: db.upsert("c", [3, 4], np.ones((2, 5), np.float32), tenant="a"),
            ),
            (
                InvalidArgument,
                lambda: db.upsert("c", [3, 3], np.ones((2, 4), np.float32), tenant="a"),
            ),
            (
                InvalidArgument,
                lambda: db.upsert(
                    "c", [3, 4], np.ones((2, 4), np.float32), documents=["only one"], tenant="a"
                ),
            ),
            (NotFound, lambda: db.upsert("c", [3], np.ones((1, 4), np.float32), tenant="nobody")),
            (NotFound, lambda: db.upsert("nope", [3], np.ones((1, 4), np.float32), tenant="a")),
        ]
        for exc, call in cases:
            with pytest.raises(exc):
                call()
        assert db.server_info().seq == seq
        assert db.count("c") == 2
        assert db.get("c", [3, 4, 5], owner="a").ids.tolist() == []
        with db.store.read() as txn:
            assert db.store.count_prefix(txn, "vectors", 1) == 2


def test_store_rejects_a_foreign_format(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(
        lambda txn: txn.put(b"format_version", (99).to_bytes(4, "big"), db=store.db["meta"])
    )
    store.close()
    with pytest.raises(FailedPrecondition, match="storage format"):
        Store(tmp_path)
