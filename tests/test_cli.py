"""`curator` (client/cli.py), each verb run as a subprocess against a real `python -m server`
process; the admin key comes from the key file the server generated or from the environment.
(The console script runs `client.cli:main`; here it is started as `python -m client.cli` so
that the worktree's code runs without installing it.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client import Client, bulk
from curator import errors
from curator.config import DatabaseConfig
from curator.database import Database
from tests.test_server_process import _start

ROOT = Path(__file__).resolve().parents[1]
DIM = 4


class Proc:
    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}
        self.proc, self.port = _start(data_dir, env=env)  # generates data_dir/admin.key
        self.data_dir = data_dir
        self.key_file = data_dir / "admin.key"
        self.address = f"127.0.0.1:{self.port}"

    def run(self, *args: str, ok: bool = True, key_file: Path | None = None, **env: str) -> Any:
        """`curator --json ARGS`; returns the parsed output (ok) or the process (not ok)."""
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")},
            "PYTHONPATH": str(ROOT),
            "CURATOR_ADDRESS": self.address,
            "CURATOR_KEY_FILE": str(key_file or self.key_file),
            **env,
        }
        out = subprocess.run(
            [sys.executable, "-m", "client.cli", "--json", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=ROOT,
            timeout=120,
        )
        if not ok:
            assert out.returncode == 1, out.stdout + out.stderr
            return out
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    def client(self, key: str | None = None) -> Client:
        return Client(self.address, key or self.key_file.read_text().strip(), timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    p = Proc(tmp_path_factory.mktemp("cli") / "data")
    try:
        # the admin key is written once the database has loaded; SERVING comes after the
        # kernels are compiled (minutes with a cold numba cache on a loaded machine)
        deadline = time.monotonic() + 300
        while not p.key_file.exists():
            assert time.monotonic() < deadline, "no admin.key"
            time.sleep(0.1)
        with p.client() as c:
            while True:
                try:
                    c.server_info()
                    break
                except errors.Unavailable:
                    assert time.monotonic() < deadline, "the server never became SERVING"
                    time.sleep(0.2)
        yield p
    finally:
        p.proc.terminate()
        p.proc.wait(60)


def _rows(n: int, seed: int = 0, owner: str = "acme") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": i,
            "vector": rng.standard_normal(DIM).astype(np.float32).tolist(),
            "document": {"n": i},
            "owner": owner,
            "labels": ["lab"] if i % 2 else [],
        }
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.timeout(240)
def test_collections_and_tenants(server: Proc) -> None:
    server.run("tenants", "create", "acme")
    server.run("tenants", "create", "lab")
    assert server.run("tenants", "list") == ["acme", "lab"]
    info = server.run(
        "collections", "create", "docs", "--dim", str(DIM), "--metric", "cosine",
        "--train-min-vectors", "100", "--seed", "7",
    )  # fmt: skip
    assert (info["name"], info["dim"], info["metric"]) == ("docs", DIM, "cosine")
    assert (info["index"]["train_min_vectors"], info["index"]["seed"]) == (100, 7)
    server.run("collections", "create", "tmp", "--dim", "2")
    assert server.run("collections", "list") == ["docs", "tmp"]
    assert server.run("collections", "describe", "tmp")["vectors"] == 0
    server.run("collections", "drop", "tmp")
    server.run("tenants", "create", "gone")
    server.run("tenants", "drop", "gone")
    with server.client() as c:
        assert (c.list_collections(), c.list_tenants()) == (["docs"], ["acme", "lab"])
    bad = server.run("collections", "describe", "tmp", ok=False)
    assert "error: NotFound: expected a known collection" in bad.stderr


@pytest.mark.timeout(240)
def test_import_jsonl_with_owners_labels_and_resume(server: Proc, tmp_path: Path) -> None:
    _ensure_docs(server)
    server.run("collections", "create", "resumed", "--dim", str(DIM))
    path = _write_jsonl(tmp_path / "rows.jsonl", _rows(25))
    progress = tmp_path / "rows.progress.json"
    sig = bulk._signature(path, "resumed", 10)  # as if a run had committed chunk 0, then died
    progress.write_text(json.dumps({**sig, "chunks_done": 1, "rows_done": 10}))
    got = server.run(
        "import", "resumed", str(path), "--chunk-size", "10", "--progress-file", str(progress)
    )
    assert got == {"rows": 15, "chunks": 2, "skipped_chunks": 1, "seq": got["seq"]}
    assert json.loads(progress.read_text())["chunks_done"] == 3
    with server.client() as c:
        assert c.count("resumed") == 15  # rows 0..9 were skipped, not re-sent
        assert c.get("resumed", np.arange(10), owner="acme").ids.size == 0
        assert c.count("resumed", tenant="lab") == 7  # odd ids 11..23 granted to the label
        rec = c.get("resumed", [12], tenant="acme")
        assert rec.owners == ["acme"] and rec.documents == [{"n": 12}]
    again = server.run(
        "import", "resumed", str(path), "--chunk-size", "10", "--progress-file", str(progress)
    )
    assert (again["rows"], again["skipped_chunks"]) == (0, 3)  # all done: nothing re-sent
    other = server.run(
        "import", "docs", str(path), "--chunk-size", "7", "--progress-file", str(progress),
        ok=False,
    )  # fmt: skip
    assert "FailedPrecondition" in other.stderr  # the progress file is another import's


@pytest.mark.timeout(240)
def test_import_npy_and_export_round_trip(server: Proc, tmp_path: Path) -> None:
    _ensure_docs(server)
    x = np.random.default_rng(3).standard_normal((30, DIM)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    np.save(tmp_path / "ids.npy", np.arange(1000, 1030, dtype=np.uint64))
    got = server.run(
        "import", "docs", str(tmp_path / "v.npy"), "--ids", str(tmp_path / "ids.npy"),
        "--tenant", "acme", "--chunk-size", "8",
    )  # fmt: skip
    assert (got["rows"], got["chunks"]) == (30, 4)
    out = tmp_path / "out.jsonl"
    exported = server.run("export", "docs", str(out), "--id-range", "1000:1100", "--owner", "acme")
    assert exported["rows"] == 30
    whole = tmp_path / "whole.jsonl"
    assert server.run("export", "docs", str(whole), "--owner", "acme")["rows"] >= 30
    assert out.read_text() in whole.read_text()  # every id acme holds, in id order
    server.run("collections", "create", "copy", "--dim", str(DIM), "--metric", "cosine")
    server.run("import", "copy", str(out))  # owners come from the exported rows
    with server.client() as c:
        ids = np.arange(1000, 1030)
        a, b = c.get("docs", ids, owner="acme"), c.get("copy", ids, owner="acme")
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-6)
        assert b.owners == ["acme"] * 30
    (tmp_path / "v.npy.progress.json").unlink()
    missing = server.run("import", "docs", str(tmp_path / "v.npy"), ok=False)  # admin, no owner
    assert "InvalidArgument: expected a tenant to act as" in missing.stderr


@pytest.mark.timeout(240)
def test_import_parquet(server: Proc, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _ensure_docs(server)
    rows = [{**r, "id": r["id"] + 5000} for r in _rows(12, seed=5)]
    for r in rows:
        r["document"] = json.dumps(r["document"])  # a string column
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    got = server.run("import", "docs", str(tmp_path / "rows.parquet"), "--chunk-size", "5")
    assert (got["rows"], got["chunks"]) == (12, 3)
    with server.client() as c:
        rec = c.get("docs", [5003], owner="acme")
        assert rec.owners == ["acme"] and rec.documents == ['{"n": 3}']
        np.testing.assert_allclose(
            rec.vectors[0] / np.linalg.norm(rec.vectors[0]),
            np.array(rows[3]["vector"]) / np.linalg.norm(rows[3]["vector"]),
            rtol=1e-5,
        )


@pytest.mark.timeout(240)
def test_search_and_stats(server: Proc) -> None:
    _ensure_docs(server)
    with server.client() as c:
        c.upsert(
            "docs", [77], np.array([[1, 0, 0, 0]], np.float32), ["seventy-seven"], tenant="lab"
        )
    hits = server.run(
        "search", "docs", "--vector", "1,0,0,0", "--tenant", "lab", "-k", "2", "--documents"
    )
    assert hits[0]["hits"][0] == {"id": 77, "distance": 0.0, "document": "seventy-seven"}
    stats = server.run("stats")
    assert stats["server"]["principal"] == "admin" and "docs" in stats["collections"]
    assert stats["collections"]["docs"]["vectors"] >= 1
    bad = server.run("search", "docs", "--vector", "1,x", ok=False)
    assert "InvalidArgument" in bad.stderr


@pytest.mark.timeout(240)
def test_backup_then_restore_opens_as_a_data_dir(server: Proc, tmp_path: Path) -> None:
    _ensure_docs(server)
    with server.client() as c:
        n = c.count("docs")
    path = Path(server.run("backup", "nightly")["path"])
    assert path == server.data_dir / "backups" / "nightly"
    dest = tmp_path / "restored"
    assert server.run("restore", str(path), "--data-dir", str(dest))["restored"] == str(dest)
    with Database(DatabaseConfig(data_dir=str(dest)), background=False) as db:
        assert db.count("docs") == n and db.list_tenants() == ["acme", "lab"]
    again = server.run("restore", str(path), "--data-dir", str(dest), ok=False)
    assert "FailedPrecondition: expected a new or empty data directory" in again.stderr


@pytest.mark.timeout(240)
def test_keys_including_the_admin_key(server: Proc, tmp_path: Path) -> None:
    _ensure_docs(server)
    issued = server.run("keys", "issue", "acme", "--description", "app")
    with server.client(issued["secret"]) as c:
        assert c.server_info().principal == "tenant:acme"
    listed = server.run("keys", "list")
    assert {(k["tenant"], k["description"]) for k in listed} >= {
        ("acme", "app"),
        (None, "generated admin key"),
    }
    assert [k["key_id"] for k in server.run("keys", "list", "--tenant", "acme")] == [
        issued["key_id"]
    ]
    rotated = server.run("keys", "rotate", issued["key_id"])
    with server.client(issued["secret"]) as c, pytest.raises(errors.Unauthenticated):
        c.server_info()
    with server.client(rotated["secret"]) as c:
        assert c.server_info().principal == "tenant:acme"
    server.run("keys", "revoke", rotated["key_id"])
    with server.client(rotated["secret"]) as c, pytest.raises(errors.Unauthenticated):
        c.server_info()
    # the admin key: the last one cannot be revoked, but it can be rotated into a key file
    admin_id = next(k["key_id"] for k in server.run("keys", "list") if k["tenant"] is None)
    last = server.run("keys", "revoke", admin_id, ok=False)
    assert "FailedPrecondition: expected another admin key to remain" in last.stderr
    old = server.key_file.read_text().strip()
    new_file = tmp_path / "admin.key"
    got = server.run("keys", "rotate", "--write-key-file", str(new_file))
    assert got["written_to"] == str(new_file) and oct(new_file.stat().st_mode & 0o777) == "0o600"
    with server.client(old) as c, pytest.raises(errors.Unauthenticated):
        c.server_info()
    server.key_file.write_text(new_file.read_text())  # the fixture's key from now on
    second = server.run("keys", "issue", "--admin", "--description", "ops")
    server.run("keys", "revoke", got["key_id"], key_file=new_file, ok=True)  # two admins: fine
    env_only = server.run("keys", "list", CURATOR_API_KEY=second["secret"], CURATOR_KEY_FILE="")
    assert [k["description"] for k in env_only if k["tenant"] is None] == ["ops"]
    server.key_file.write_text(second["secret"] + "\n")
    nokey = server.run(
        "tenants", "list", CURATOR_KEY_FILE="", CURATOR_DATA_DIR=str(tmp_path / "none"), ok=False
    )
    assert "Unauthenticated: expected an API key" in nokey.stderr


def _ensure_docs(server: Proc) -> None:
    """Tests may run alone (-k): the state test_collections_and_tenants creates."""
    with server.client() as c:
        for t in ("acme", "lab"):
            if t not in c.list_tenants():
                c.create_tenant(t)
        if "docs" not in c.list_collections():
            c.create_collection("docs", DIM, "cosine")
