"""Warm start: the server compiles the numba kernels while NOT_SERVING, logs each start-up
stage with its duration, and its first query costs about what a warm one does."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client
from curator.config import DatabaseConfig, IndexConfig
from curator.database import Database
from curator.index.warmup import compiled_signatures, warm_kernels

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("open LMDB", "load collections", "cache rebuild", "warm kernels", "serving")


@pytest.mark.timeout(300)
def test_warm_up_compiles_every_kernel_a_database_workload_calls(tmp_path: Path) -> None:
    warm_kernels()
    before = compiled_signatures()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 12)).astype(np.float32)
    ids = np.arange(len(x))
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db:
        for metric in ("l2", "ip", "cosine"):
            db.create_collection(metric, 12, metric, IndexConfig(train_min_vectors=400))
        for t in ("a", "b"):
            db.create_tenant(t)
        db.allow_sharing("a", "b")
        for c in ("l2", "ip", "cosine"):
            db.upsert(c, ids[:500], x[:500], tenant="a")  # trains the tree
            db.upsert(c, ids[500:], x[500:], tenant="b")
            db.upsert(c, ids[600:610], x[:10], tenant="b")  # a small batch into the tree
            db.grant(c, ids[:100], "b", tenant="a")
            db.revoke(c, ids[:20], "b", tenant="a")
            for nq in (1, 3, 16):
                db.search(c, x[:nq], k=10, tenant="a")
                db.search(c, x[:nq], k=10, tenant="b", with_vectors=True)
                db.search(c, x[:nq], k=4, tenant=["a", "b"])
                db.search(c, x[:nq], k=4, tenant=("a", "b"), require_all=True)
            db.get(c, ids[:30], tenant="b", owner="a")
            db.delete(c, ids[:5], tenant="a")
    after = compiled_signatures()
    assert {k: v for k, v in after.items() if v != before.get(k, 0)} == {}


WARM_KEY = "warm-start-test-admin-key-0123456789abcdef"  # strong: weak keys are refused


def _log_messages(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["message"])
        except (ValueError, KeyError):
            continue  # numba or grpc writing to stderr directly
    return out


def _wait_serving(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the server exited"
            try:
                got = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if got == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError("the server did not report SERVING in time")


@pytest.mark.timeout(400)
def test_cold_server_warms_kernels_before_serving(tmp_path: Path) -> None:
    # An empty numba cache: the server must compile every kernel, as after a fresh install.
    env = {
        **os.environ,
        "CURATOR_ADMIN_KEY": WARM_KEY,
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    log = tmp_path / "server.log"
    args = ["--data-dir", str(tmp_path / "data"), "--address", "127.0.0.1:0"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", *args, "--log-format", "json"],
            stderr=err,
            cwd=tmp_path,
            env=env,
        )
    try:
        deadline = time.monotonic() + 300
        port = 0
        while not port and time.monotonic() < deadline:
            found = re.search(r"\(port (\d+)\)", log.read_text())
            port = int(found.group(1)) if found else 0
            time.sleep(0.1)
        _wait_serving(port, proc, deadline)
        stages = [m for m in _log_messages(log) if m.startswith("start-up: ")]
        named = [s for name in STAGES for s in stages if s.startswith(f"start-up: {name} ")]
        assert len(named) == len(STAGES) and named == stages, stages
        assert all(re.search(r"\d+\.\d\d s", s) for s in stages), stages

        rng = np.random.default_rng(0)
        x = rng.standard_normal((12_000, 16)).astype(np.float32)  # past train_min_vectors
        with Client(f"127.0.0.1:{port}", WARM_KEY, timeout=120) as c:
            c.create_tenant("t")
            c.create_collection("docs", 16, "cosine")
            c.upsert("docs", np.arange(len(x)), x, tenant="t")  # trains: tree search below
            trained_by = time.monotonic() + 120
            while not any(m.startswith("trained shared tree") for m in _log_messages(log)):
                assert time.monotonic() < trained_by, "the collection was never trained"
                time.sleep(0.2)

            def query(i: int) -> float:
                t0 = time.perf_counter()
                c.search("docs", x[i : i + 1], k=10, tenant="t")
                return time.perf_counter() - t0

            first = query(0)
            warm = statistics.median(query(i) for i in range(1, 31))
        # Compiling the tree kernels takes seconds; a warm query takes about a millisecond.
        # The slack absorbs a loaded machine, not a compile.
        assert first < 10 * warm + 0.5, (first, warm)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
