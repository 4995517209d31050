"""The search response is bounded before it is built (issue #10 item 5): a request whose
response would pass `max_response_bytes` gets RESOURCE_EXHAUSTED with the limit in the message,
checked from the request (nq x k x what is asked for) and while documents are fetched, so the
server's memory stays bounded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from client import Client
from curator import errors
from curator.config import DatabaseConfig
from curator.database import Database
from tests.test_server_process import until_serving

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "resp-admin-" + "Zq8wX3kP" * 4


def _db(tmp_path: Path, **kw: int) -> Database:
    db = Database(DatabaseConfig(data_dir=str(tmp_path), **kw), background=False)
    db.create_tenant("a")
    db.create_collection("c", dim=8)
    return db


def test_response_bound_checked_from_the_request_before_searching(tmp_path: Path) -> None:
    with _db(tmp_path, max_response_bytes=1 << 20) as db:
        x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
        db.upsert("c", np.arange(100), x, tenant="a")
        q = x[:2]
        assert db.search("c", q, k=100, tenant="a").ids.shape == (2, 100)
        # 64 queries x 4096 x (16 + 32 vector bytes) = 12.6 MB > 1 MiB: refused up front.
        with pytest.raises(errors.ResourceExhausted, match=r"at most 1048576 bytes.*k=4096"):
            db.search("c", np.repeat(q, 32, axis=0), k=4096, tenant="a", with_vectors=True)
        # The same hits without vectors fit (64 x 4096 x 16 = 4 MiB > 1 MiB: still refused),
        # a smaller k fits.
        with pytest.raises(errors.ResourceExhausted, match="max_response_bytes"):
            db.search("c", np.repeat(q, 32, axis=0), k=4096, tenant="a")
        assert db.search("c", np.repeat(q, 32, axis=0), k=100, tenant="a").ids.shape == (64, 100)


def test_documents_fetched_within_a_running_budget(tmp_path: Path) -> None:
    with _db(tmp_path, max_response_bytes=256 << 10) as db:
        x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        db.upsert("c", np.arange(64), x, ["d" * 16_384] * 64, tenant="a")
        res = db.search("c", x[:1], k=8, tenant="a", with_documents=True)  # 128 KiB: fits
        assert [len(d) for d in res.documents[0]] == [16_384] * 8
        # 64 x 16 KiB = 1 MiB of documents: the request alone looks small (64 x 24 bytes).
        with pytest.raises(errors.ResourceExhausted, match=r"at most 262144 bytes"):
            db.search("c", x[:1], k=64, tenant="a", with_documents=True)
        assert db.search("c", x[:1], k=64, tenant="a").ids.shape == (1, 64)


def _start(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "CURATOR_ADMIN_KEY": ADMIN, "CURATOR_SYNC": "false"}
    cmd = [sys.executable, "-m", "server", "--data-dir", str(data_dir), "--address", "127.0.0.1:0"]
    with open(log, "wb") as f:
        proc = subprocess.Popen([*cmd, "--log-format", "text"], stderr=f, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"\(port (\d+)\)", log.read_text())
        if found:
            return proc, int(found.group(1))
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not report its port")


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss  # pragma: no cover (not Linux)


@pytest.mark.timeout(180)
def test_huge_search_response_refused_over_grpc_with_bounded_rss(tmp_path: Path) -> None:
    """The attack of the issue: k=4096, 16 KiB documents, 8 queries (a 537 MB response that
    took the server from 287 MB to 2.5 GB RSS before gRPC refused it)."""
    proc, port = _start(tmp_path / "data", tmp_path / "server.log")
    try:
        with Client(f"127.0.0.1:{port}", ADMIN, timeout=60) as c:
            until_serving(lambda: c.create_tenant("a"))
            c.create_collection("c", 8)
            rng = np.random.default_rng(0)
            doc = "x" * 16_384
            for at in range(0, 4096, 1024):
                x = rng.standard_normal((1024, 8)).astype(np.float32)
                c.upsert("c", np.arange(at, at + 1024), x, [doc] * 1024, tenant="a")
            q = rng.standard_normal((8, 8)).astype(np.float32)
            assert c.search("c", q[:1], k=4, tenant="a", with_documents=True).ids.shape == (1, 4)
            before = psutil.Process(proc.pid).memory_info().rss
            with pytest.raises(errors.ResourceExhausted, match="max_response_bytes"):
                c.search("c", q, k=4096, tenant="a", with_documents=True)
            peak = _peak_rss(proc.pid)
            # still serving after the refusal
            assert c.search("c", q[:1], k=4, tenant="a").ids.shape == (1, 4)
        print(f"server RSS before {before >> 20} MiB, peak {peak >> 20} MiB")
        # The default limit is 32 MiB; the old code peaked 2.2 GB above its start.
        assert peak - before < 400 << 20
    finally:
        proc.kill()
        proc.wait(30)
