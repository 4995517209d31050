"""Hygiene (issue #10 item 11): the op log is trimmed per collection, unfinished snapshot files
are removed at start, the data directory is private, weak admin keys are refused, the admin
key can come from a file, and the unauthenticated metrics page names no tenant's categories."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from client import Client
from curator import errors
from curator.cache.config import CacheConfig
from curator.config import DatabaseConfig
from curator.database import Database
from server.__main__ import cache_state
from server.config import ServerConfig, check_admin_key, configured_admin_key
from server.metrics import CacheState
from tests.test_cache import emb
from tests.test_server_process import _start, until_serving

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
STRONG = "hyg-" + "Tk4mW8qZ2cPx7Rn5" * 2


def _db(path: Path, **cache: int) -> Database:
    return Database(
        DatabaseConfig(data_dir=str(path)),
        background=False,
        cache_config=CacheConfig(**cache) if cache else None,
    )


def _ops(db: Database) -> list[int]:
    with db.store.read() as txn:
        return [seq for seq, *_ in db.store.ops_after(txn, 0)]


def test_idle_snapshotted_collection_does_not_pin_the_op_log(tmp_path: Path) -> None:
    """The review's appendix B: "idle" snapshotted at seq 1, 200 writes to "busy", a snapshot
    of "busy": the old trim kept all 200 ops (seqs 2..201)."""
    x = np.random.default_rng(0).standard_normal((201, 4)).astype(np.float32)
    with _db(tmp_path) as db:
        db.create_tenant("a")
        db.create_collection("idle", dim=4)
        db.create_collection("busy", dim=4)
        db.upsert("idle", [0], x[:1], tenant="a")
        assert db.snapshot("idle") == 1
        for i in range(1, 201):
            db.upsert("busy", [i], x[i : i + 1], tenant="a")
        assert len(_ops(db)) == 200
        db.snapshot("busy")
        assert _ops(db) == []
        # A collection with writes after its snapshot still holds the floor.
        db.upsert("idle", [1], x[1:2], tenant="a")
        db.upsert("busy", [500], x[:1], tenant="a")
        db.snapshot("busy")
        assert _ops(db) == [202, 203]  # idle's write (202) is kept for its replay
        db.close(snapshot=False)
    with _db(tmp_path) as db:  # both replay from their snapshots and the trimmed log
        assert db.count("idle") == 2 and db.count("busy") == 201


def test_unfinished_snapshot_files_are_removed_at_start(tmp_path: Path) -> None:
    with _db(tmp_path) as db:
        db.create_tenant("a")
        db.create_collection("c", dim=4)
        db.upsert("c", [1], np.ones((1, 4), np.float32), tenant="a")
        db.snapshot("c")
    snaps = tmp_path / "snapshots"
    (snaps / "1-9.npz.tmp").write_bytes(b"half a snapshot")  # as a kill mid-write leaves it
    kept = sorted(p.name for p in snaps.iterdir() if not p.name.endswith(".tmp"))
    with _db(tmp_path) as db:
        assert sorted(p.name for p in snaps.iterdir()) == kept
        assert db.count("c") == 1


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def test_data_directory_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with _db(data, hnsw_min=16) as db:
        db.create_tenant("a")
        db.create_collection("c", dim=4)
        db.upsert("c", [1], np.ones((1, 4), np.float32), tenant="a")
        db.snapshot("c")
        for i in range(24):  # enough entries for an HNSW graph, saved at close
            db.cache_store(f"q{i}", emb(i), b"r", tenant="a", model="m")
        db.backup_to(data / "backups" / "b1")
    modes = _modes(data)
    names = set(modes)
    assert {"lmdb/data.mdb", "lmdb/lock.mdb", "backups/b1/lmdb/data.mdb"} <= names
    assert any(n.startswith("snapshots/") and n.endswith(".npz") for n in names)
    assert any(n.startswith("cache-graphs/") for n in names)
    for name, mode in modes.items():
        want = 0o700 if (data / name).is_dir() else 0o600
        assert mode == want, f"{name}: {oct(mode)}"
    # What an older version left readable is tightened at the next open.
    os.chmod(data, 0o755)
    os.chmod(data / "lmdb" / "data.mdb", 0o644)
    _db(data).close()
    assert _modes(data)["."] == 0o700 and _modes(data)["lmdb/data.mdb"] == 0o600


@pytest.mark.parametrize(
    "weak",
    ["proc-admin", "x" * 40, "ab" * 20, "password" * 5, "0123456789" * 3 + "0"],
)
def test_weak_admin_key_is_refused(weak: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="expected an admin key of at least 32"):
        check_admin_key(weak)
    with pytest.raises(errors.InvalidArgument, match="weak key"):
        configured_admin_key(ServerConfig(admin_key=weak))


def test_server_refuses_to_start_with_a_weak_admin_key(tmp_path: Path) -> None:
    env = {**os.environ, "CURATOR_ADMIN_KEY": "admin123"}
    cmd = [sys.executable, "-m", "server", "--data-dir", str(tmp_path), "--address", "127.0.0.1:0"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to start" in out.stderr and "at least 32 characters" in out.stderr


def test_admin_key_from_a_file_is_not_in_the_process_list(tmp_path: Path) -> None:
    assert check_admin_key(STRONG) == STRONG
    key_file = tmp_path / "admin.key"
    key_file.write_text(STRONG + "\n")
    key_file.chmod(0o600)
    assert configured_admin_key(ServerConfig(admin_key_file=str(key_file))) == STRONG
    with pytest.raises(errors.InvalidArgument, match="got both"):
        configured_admin_key(ServerConfig(admin_key=STRONG, admin_key_file=str(key_file)))
    env = {k: v for k, v in os.environ.items() if k != "CURATOR_ADMIN_KEY"}
    proc, port = _start(tmp_path / "data", "--admin-key-file", str(key_file), env=env)
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert STRONG not in cmdline
        with Client(f"127.0.0.1:{port}", STRONG, timeout=30) as c:
            until_serving(lambda: c.create_tenant("a"))
            assert c.list_tenants() == ["a"]
        assert not (tmp_path / "data" / "admin.key").exists()  # none generated
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    finally:
        proc.kill()
        proc.wait(30)


def test_metrics_page_names_no_tenant_or_its_categories(tmp_path: Path) -> None:
    with _db(tmp_path) as db:
        db.create_tenant("secretco")
        db.cache_set_policy("merger-talks", tenant="secretco", threshold=0.9)
        db.cache_store("q", emb(0), b"r", tenant="secretco", model="m", category="merger-talks")
        db.cache_store("q2", emb(1), b"r", tenant="secretco", model="m", category="chat")
        db.cache_lookup("q", emb(0), tenant="secretco", model="m", category="merger-talks")
        db.cache_report_load("m", 0.5)
        registry = CollectorRegistry()
        registry.register(CacheState(lambda: cache_state(db)))
        text = generate_latest(registry).decode()
    assert "secretco" not in text and "merger-talks" not in text
    assert 'curator_cache_entries{category="other"} 1.0' in text  # aggregated, not dropped
    assert 'curator_cache_entries{category="chat"} 1.0' in text
    assert 'curator_cache_events_total{category="other",event="hit_exact"} 1.0' in text


def test_a_snapshot_at_seq_0_still_holds_the_log(tmp_path: Path) -> None:
    """Found by the database state machine: a collection snapshotted while empty (seq 0) was
    taken for one without a snapshot, so another collection's snapshot trimmed its later
    writes, and an unclean restart lost them."""
    cfg = DatabaseConfig(data_dir=str(tmp_path))
    db = Database(cfg, background=False)
    db.create_collection("x", 4)
    db.create_tenant("a")
    db.snapshot("x")  # at seq 0
    db.upsert("x", [0], np.ones((1, 4), np.float32), tenant="a")
    db.create_collection("y", 4)
    db.snapshot("y")  # must not trim x's upsert
    db.close(snapshot=False)
    with Database(cfg, background=False) as again:
        assert again.count("x") == 1
