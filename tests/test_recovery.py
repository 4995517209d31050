"""Crash safety and recovery with real processes and real files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from curator.config import DatabaseConfig, IndexConfig, SearchParams
from curator.database import Database
from tests.crash_writer import BATCH, batch_vectors

ROOT = Path(__file__).resolve().parents[1]
EXACT = SearchParams(exact_search_threshold=10**9)


def run_until_killed(data_dir: Path, start: int, seconds: float, *mode: str) -> list[int]:
    """Start the writer, SIGKILL it `seconds` after its first acknowledgement; return the
    acknowledged batches."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "crash_writer.py"),
            str(data_dir),
            str(start),
            *mode,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[int] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ack "):
                acked.append(int(line.split()[1]))
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(120), "the writer acknowledged nothing"
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    return acked


def _check_batches(db: Database, acked: set[int], upto: int) -> None:
    present = db.count("c")
    for b in range(upto + 2):
        ids, x = batch_vectors(b)
        got = db.get("c", ids, owner="owner")
        if b in acked:
            assert len(got.ids) == BATCH, f"acknowledged batch {b} lost vectors"
            np.testing.assert_array_equal(got.vectors, x)
            assert got.documents == [f"b{b}"] * BATCH
            # present in the owner's sub-tree (an exact scan of it: this checks durability, the
            # approximate search's recall is tested elsewhere)
            res = db.search("c", x[:3], k=1, tenant="owner", params=EXACT)
            assert res.ids[:, 0].tolist() == ids[:3].tolist()
            if b % 2 == 0:
                assert db.get("c", ids, tenant="reader", owner="owner").ids.tolist() == ids.tolist()
        else:
            assert len(got.ids) in (0, BATCH), f"batch {b} is half there ({len(got.ids)})"
    assert present % BATCH == 0


@pytest.mark.timeout(180)
def test_sigkill_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    rng = random.Random(7)
    acked: set[int] = set()
    start = 0
    for _ in range(4):
        got = run_until_killed(tmp_path, start, rng.uniform(0.0, 1.2))
        acked.update(got)
        upto = max(acked, default=0)
        with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db:
            _check_batches(db, acked, upto)
            start = db.count("c") // BATCH  # continue after what is there
    assert len(acked) >= 8


def _fill(tmp_path: Path) -> tuple[Database, np.ndarray]:
    db = Database(DatabaseConfig(data_dir=str(tmp_path)), background=False)
    db.create_tenant("a")
    db.create_tenant("b")
    db.create_collection("c", 16, "cosine", IndexConfig(train_min_vectors=300, max_sl_size=16))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1200, 16)).astype(np.float32)
    for i in range(0, 1200, 300):
        db.upsert("c", np.arange(i, i + 300), x[i : i + 300], tenant="a")
    db.allow_sharing("a", "b")
    db.grant("c", np.arange(0, 1200, 3), "b", tenant="a")
    return db, x


@pytest.mark.timeout(60)
def test_restart_gives_identical_results(tmp_path: Path) -> None:
    db, x = _fill(tmp_path)
    db.snapshot("c")
    db.delete("c", np.arange(0, 50), owner="a")  # logged after the snapshot: replayed at start-up
    db.revoke("c", np.arange(60, 90, 3), "b", tenant="a")
    before = {t: db.search("c", x[:40], k=10, tenant=t) for t in ("a", "b")}
    db.close(snapshot=False)
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db2:
        for t, res in before.items():
            after = db2.search("c", x[:40], k=10, tenant=t)
            np.testing.assert_array_equal(after.ids, res.ids)
            np.testing.assert_allclose(after.distances, res.distances, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "version"])
def test_bad_snapshot_falls_back_to_rebuild(tmp_path: Path, damage: str) -> None:
    db, x = _fill(tmp_path)
    db.snapshot("c")
    before = db.search("c", x[:30], k=5, tenant="b")
    db.close(snapshot=False)
    (snap,) = (tmp_path / "snapshots").glob("*.npz")
    if damage == "truncate":
        snap.write_bytes(snap.read_bytes()[: snap.stat().st_size // 2])
    elif damage == "garbage":
        snap.write_bytes(b"not a snapshot" * 100)
    elif damage == "missing":
        snap.unlink()
    else:
        with np.load(snap) as z:
            arrays = {k: z[k] for k in z.files}
        meta = bytes(arrays["meta"]).replace(b'"format_version": 2', b'"format_version": 99')
        arrays["meta"] = np.frombuffer(meta, np.uint8)
        with open(snap, "wb") as f:
            np.savez(f, **arrays)
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db2:
        after = db2.search("c", x[:30], k=5, tenant="b")
        assert db2.count("c") == 1200
        np.testing.assert_array_equal(np.sort(after.ids, 1), np.sort(before.ids, 1))


@pytest.mark.timeout(60)
def test_backup_opens_as_a_working_database(tmp_path: Path) -> None:
    db, x = _fill(tmp_path / "live")
    db.snapshot("c")
    db.upsert("c", [5000], x[:1], tenant="a")
    db.backup_to(tmp_path / "copy")
    db.upsert("c", [5001], x[1:2], tenant="a")  # after the backup: not in it
    expected = db.search("c", x[:10], k=5, tenant="b").ids
    db.close()
    with Database(DatabaseConfig(data_dir=str(tmp_path / "copy")), background=False) as bk:
        assert bk.count("c") == 1201
        assert bk.get("c", [5000, 5001], owner="a").ids.tolist() == [5000]
        np.testing.assert_array_equal(bk.search("c", x[:10], k=5, tenant="b").ids, expected)
        bk.upsert("c", [6000], x[:1], tenant="a")  # and it takes writes
        assert bk.count("c") == 1202


@pytest.mark.timeout(60)
def test_background_snapshot_trims_the_log(tmp_path: Path) -> None:
    cfg = DatabaseConfig(data_dir=str(tmp_path), snapshot_every_writes=3, snapshot_every_seconds=0)
    with Database(cfg) as db:
        db.create_tenant("a")
        db.create_collection("idle", 4)  # never written: must not hold the log back
        db.create_collection("c", 4)
        for i in range(10):
            db.upsert("c", [i], np.ones((1, 4), np.float32) * i, tenant="a")
        deadline = time.monotonic() + 10
        while db.snapshot_seq("c") < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.snapshot_seq("c") >= 9
        with db.store.read() as txn:
            remaining = list(db.store.ops_after(txn, 0))
        assert all(seq > 9 for seq, *_ in remaining)


@pytest.mark.timeout(120)
def test_backup_command_copies_a_live_database(tmp_path: Path) -> None:
    db, x = _fill(tmp_path / "live")
    db.snapshot("c")
    try:  # the database stays open (and writable) in this process while the CLI copies it
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "curator",
                "backup",
                "--data-dir",
                str(tmp_path / "live"),
                str(tmp_path / "copy"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=100,
        )
        assert run.returncode == 0, run.stderr
        db.upsert("c", [7000], x[:1], tenant="a")
    finally:
        db.close()
    with Database(DatabaseConfig(data_dir=str(tmp_path / "copy")), background=False) as bk:
        assert bk.count("c") == 1200
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "curator",
            "backup",
            "--data-dir",
            str(tmp_path / "nothing"),
            str(tmp_path / "copy2"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100,
    )
    assert missing.returncode != 0 and "expected an openable data directory" in missing.stderr
