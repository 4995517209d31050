"""Smoke test of an installed Curator DB (a wheel in a fresh virtualenv), run by `.ci/run`.

`python smoke_wheel.py` from OUTSIDE the source tree, with the virtualenv's interpreter: starts
`curator-server` (the console script beside that interpreter) on 127.0.0.1 with a temporary
data directory, waits for gRPC health SERVING, then as the admin creates a tenant and a
collection and issues a key, and as that tenant upserts, searches, stores and looks up a
cache entry; stops the server with SIGTERM and expects exit code 0. Exits non-zero (with the
server's log) on any failure. Not collected by pytest: it must run against the installed
packages, never the checkout.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

import curator
import curator.cache  # the package the first wheel left out
from client import Client

START_TIMEOUT_S = 300.0  # a cold numba cache compiles the kernels before SERVING


def _installed_not_checkout() -> None:
    site = Path(curator.__file__).resolve().parents[1]
    if not (site.name == "site-packages" or "site-packages" in site.parts):
        raise SystemExit(f"expected curator imported from site-packages, got {curator.__file__}")
    for pkg in ("curator", "server", "client", "curator_api"):
        if not (site / pkg / "py.typed").exists():
            raise SystemExit(f"expected {pkg}/py.typed in the installed wheel, got none")


def _port_from_log(log: Path, proc: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        m = re.search(r"listening on \S+ \(port (\d+)\)", log.read_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise SystemExit("server did not log its port in time")


def _wait_serving(address: str, deadline: float) -> float:
    t0 = time.monotonic()
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - t0
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit("server did not report SERVING in time")


def _exercise(address: str, admin_key: str) -> None:
    with Client(address, api_key=admin_key) as admin:
        admin.create_tenant("smoke")
        admin.create_collection("docs", dim=8, metric="cosine")
        _, key = admin.issue_key("smoke")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    with Client(address, api_key=key) as db:
        w = db.upsert("docs", np.arange(200), vectors, documents=[f"doc {i}" for i in range(200)])
        assert w.count == 200 and w.seq > 0, w
        hits = db.search("docs", vectors[:3], k=5, with_documents=True)
        assert hits.ids.shape == (3, 5) and hits.ids[:, 0].tolist() == [0, 1, 2], hits.ids
        assert hits.documents is not None and hits.documents[0][0] == "doc 0", hits.documents
        emb = vectors[0]
        db.cache_store("what is the smoke test?", emb, "this", model="m", category="code")
        got = db.cache_lookup("what is the smoke test?", emb, model="m", category="code")
        assert got.hit and got.response == b"this", got


def main() -> int:
    server_bin = Path(sys.executable).with_name("curator-server")
    _installed_not_checkout()
    with tempfile.TemporaryDirectory(prefix="curator-smoke-") as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "server.log"
        t0 = time.monotonic()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(server_bin), "--address", "127.0.0.1:0", "--data-dir", str(data)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            address = f"127.0.0.1:{_port_from_log(log, proc, deadline)}"
            _wait_serving(address, deadline)
            ready = time.monotonic() - t0
            _exercise(address, (data / "admin.key").read_text().strip())
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            if rc != 0:
                raise SystemExit(f"server exited with {rc} after SIGTERM")
        except BaseException:
            proc.kill()
            sys.stderr.write(log.read_text())
            raise
        stages = [
            json.loads(line)["message"]
            for line in log.read_text().splitlines()
            if line.startswith("{") and "start-up:" in line
        ]
        print(f"wheel smoke test passed: SERVING after {ready:.1f} s; " + "; ".join(stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
