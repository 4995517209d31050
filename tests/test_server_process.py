"""`python -m server` as a real process: starts, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from client import Client
from curator.config import DatabaseConfig
from curator.database import Database
from curator.errors import Unavailable
from server.health_probe import check

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "proc-admin-" + "Hq3vT9xLm2" * 3  # a configured admin key must be strong


def _start(
    data_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], int]:
    """Run `python -m server` on a free port; returns the process and the port it logged."""
    env = env if env is not None else {**os.environ, "CURATOR_ADMIN_KEY": ADMIN_KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "--data-dir",
            str(data_dir),
            "--address",
            "127.0.0.1:0",
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = re.search(r"\(port (\d+)\)", line)
        if found:
            return proc, int(found.group(1))
    proc.kill()
    raise AssertionError("the server did not report its port")


def until_serving(first_call: Callable[[], object], timeout: float = 30) -> None:
    """Run `first_call` until it succeeds: the server answers UNAVAILABLE while the database
    loads."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            first_call()
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.timeout(120)
def test_sigterm_finishes_and_keeps_data(tmp_path: Path) -> None:
    proc, port = _start(tmp_path)
    try:
        with Client(f"127.0.0.1:{port}", ADMIN_KEY, timeout=30) as c:
            until_serving(lambda: c.create_tenant("a"))
            c.create_collection("docs", 4)
            c.upsert("docs", np.arange(50), np.ones((50, 4), np.float32), tenant="a")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db:
        assert db.count("docs") == 50
        assert db.snapshot_seq("docs") == 1  # closed cleanly


@pytest.mark.timeout(120)
def test_generated_admin_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CURATOR_ADMIN_KEY"}
    proc, port = _start(tmp_path, "--log-format", "text", env=env)
    try:
        key_file = tmp_path / "admin.key"
        deadline = time.monotonic() + 60
        while not key_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # written once the database has opened
        assert key_file.exists() and oct(key_file.stat().st_mode)[-3:] == "600"
        while check(f"127.0.0.1:{port}") != "SERVING":  # kernels warm after the key is written
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with Client(f"127.0.0.1:{port}", key_file.read_text().strip(), timeout=30) as c:
            assert c.server_info().principal == "admin"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_client_imports_without_the_engine() -> None:
    code = (
        "import sys, client, client.aio; from curator import errors; "
        "print(sorted(m for m in ('faiss', 'hnswlib', 'lmdb', 'numba') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


def test_core_does_not_import_the_service() -> None:
    code = (
        "import sys, curator.database, curator.index; "
        "print(sorted(m for m in ('grpc', 'server', 'client') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"
