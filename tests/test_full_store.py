"""A full store (issue #10 item 6): every storage-full condition is RESOURCE_EXHAUSTED; deletes,
drops and cache invalidations keep working on it (the write reserve); nothing acknowledged is
lost after reopening; per-tenant byte quotas for vectors and documents."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import lmdb
import numpy as np
import pytest

from curator import errors
from curator.config import DatabaseConfig
from curator.database import Database
from curator.storage import documents, quota
from curator.storage.store import Store
from tests.test_cache import emb

pytestmark = pytest.mark.timeout(180)

DOC = "d" * 16_384


def _fill_and_free(db: Database) -> tuple[dict[int, str | None], str]:
    """Fill the store until it refuses a write, then free space through the API. Returns the
    acknowledged rows that must survive ({id: document}) and the refusal's message."""
    db.create_tenant("a")
    db.create_tenant("b")
    db.create_collection("c", dim=8)
    db.create_collection("junk", dim=8)
    rng = np.random.default_rng(0)
    db.upsert("junk", [1, 2], rng.standard_normal((2, 8)), tenant="b")
    assert db.cache_store("q", emb(0), b"r" * 1000, tenant="a", model="m").stored
    acked: dict[int, str | None] = {}
    message = ""
    next_id = 0
    # Big writes until one is refused, then ever smaller ones: the store ends up full to the
    # last page (a small write's size estimate leaves no headroom of its own).
    for batch, doc in ((16, DOC), (256, None), (16, None), (1, None)):
        for _ in range(100_000):
            ids = np.arange(next_id, next_id + batch)
            docs = [None if doc is None else f"{j}:{doc}" for j in ids.tolist()]
            try:
                db.upsert("c", ids, rng.standard_normal((batch, 8)), docs, tenant="a")
            except errors.ResourceExhausted as e:
                message = message or str(e)
                break
            acked.update(zip(ids.tolist(), docs, strict=True))
            next_id += batch
        else:
            raise AssertionError("the store never filled")
    assert len(acked) >= 64
    with pytest.raises(errors.ResourceExhausted):  # still full: refused again, not INTERNAL
        db.upsert("c", ids, rng.standard_normal((batch, 8)), docs, tenant="a")
    # Space can be freed through the API on the full store.
    gone = sorted(acked)[:64]
    assert db.delete("c", gone, tenant="a").count == len(gone)
    for j in gone:
        del acked[j]
    assert db.cache_invalidate(tenant="a") == 1
    db.drop_collection("junk")
    db.drop_tenant("b")
    # ... and ordinary writes work again in the space freed.
    db.upsert("c", [10**9], rng.standard_normal((1, 8)), ["after"], tenant="a")
    acked[10**9] = "after"
    return acked, message


def _check_reopened(path: Path, acked: dict[int, str | None]) -> None:
    with Database(DatabaseConfig(data_dir=str(path)), background=False) as db:
        assert db.list_collections() == ["c"]
        assert db.list_tenants() == ["a"]
        assert db.count("c") == len(acked)
        ids = np.array(sorted(acked), np.uint64)
        got = db.get("c", ids, owner="a")
        assert got.ids.tolist() == ids.tolist()
        assert got.documents == [acked[j] for j in sorted(acked)]
        assert db.cache_stats(tenant="a").entries == 0


def test_full_map_is_resource_exhausted_and_frees_still_work(tmp_path: Path) -> None:
    cfg = DatabaseConfig(data_dir=str(tmp_path), map_size=1 << 20, max_map_size=4 << 20, sync=False)
    db = Database(cfg, background=False)
    acked, message = _fill_and_free(db)
    assert "max_map_size" in message
    db.close()  # the snapshots at close are written even though the store was full
    _check_reopened(tmp_path, acked)


@contextlib.contextmanager
def _tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount): {e}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def test_full_disk_is_resource_exhausted_and_frees_still_work(tmp_path: Path) -> None:
    """On a full tmpfs LMDB's commit fails with EIO; that, ENOSPC and a refused allocation
    are all RESOURCE_EXHAUSTED, and the reserve allocated on disk lets deletes through."""
    with _tiny_tmpfs(tmp_path / "mnt", "6m") as mnt:
        data = mnt / "db"
        cfg = DatabaseConfig(
            data_dir=str(data), map_size=1 << 20, write_reserve_bytes=1 << 20, sync=False
        )
        db = Database(cfg, background=False)
        acked, message = _fill_and_free(db)
        assert "free disk space" in message
        db.close(snapshot=False)  # no room for snapshot files; the log replays instead
        _check_reopened(data, acked)


def test_storage_full_errors_all_map_to_resource_exhausted(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=1 << 20)
    try:
        for exc in (
            lmdb.DiskError("mdb_txn_commit: Input/output error"),
            lmdb.Error("mdb_txn_commit: No space left on device"),
            OSError(28, "No space left on device"),
            OSError(5, "Input/output error"),
        ):

            def fail(txn: object, exc: BaseException = exc) -> None:
                raise exc

            with pytest.raises(errors.ResourceExhausted, match="expected free disk space"):
                store.write(fail)
        with pytest.raises(lmdb.BadValsizeError):  # not a full store: not disguised as one
            store.write(lambda txn: txn.put(b"", b"x"))
    finally:
        store.close()


def test_tenant_byte_quota_for_vectors_and_documents(tmp_path: Path) -> None:
    cfg = DatabaseConfig(data_dir=str(tmp_path), tenant_max_bytes=100_000)
    rng = np.random.default_rng(0)
    with Database(cfg, background=False) as db:
        for t in ("a", "b"):
            db.create_tenant(t)
        db.create_collection("c", dim=8)
        db.create_collection("d", dim=8)
        row = 8 * 4 + len(documents.encode("x" * 1000, 1 << 20))  # vector + stored document

        def put(coll: str, ids: object, tenant: str) -> None:
            n = len(np.atleast_1d(ids))
            db.upsert(coll, ids, rng.standard_normal((n, 8)), ["x" * 1000] * n, tenant=tenant)

        def used(tenant: str) -> int:
            with db.store.read() as txn:
                return quota.used(db.store, txn, db._tenant_id(tenant))

        put("c", np.arange(90), "a")
        put("c", np.arange(50), "a")  # replacing rows is not counted twice
        assert used("a") == 90 * row
        with pytest.raises(
            errors.ResourceExhausted, match=r"quota of 100000 bytes.*tenant_max_bytes"
        ):
            put("d", np.arange(10), "a")  # 100 rows over both collections > 100_000 bytes
        assert db.count("d") == 0 and used("a") == 90 * row  # nothing applied
        put("c", np.arange(100, 190), "b")  # another tenant has its own quota
        assert db.delete("c", np.arange(20), tenant="a").count == 20
        assert used("a") == 70 * row
        put("d", np.arange(10), "a")  # the deleted bytes are free again
        db.drop_collection("d")
        assert used("a") == 70 * row
    with Database(cfg, background=False) as db:  # the totals are durable
        with db.store.read() as txn:
            assert quota.used(db.store, txn, db._tenant_id("a")) == 70 * row
        db.drop_tenant("b")
        with db.store.read() as txn:
            assert quota.used(db.store, txn, 2) == 0
