"""The container image: the health probe it uses, the Dockerfile and compose files, and (opt-in,
CURATOR_TEST_CONTAINER=1, with podman or docker and a base image present) a real build and run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from curator.config import DatabaseConfig
from curator.database import Database
from server.app import create_server
from server.config import ServerConfig
from server.health_probe import main as probe

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


@pytest.mark.timeout(60)
def test_health_probe_is_zero_only_while_serving(tmp_path: Path) -> None:
    with Database(DatabaseConfig(data_dir=str(tmp_path)), background=False) as db:
        server = create_server(db, ServerConfig(address="127.0.0.1:0"))
        port = server.port
        try:
            assert probe([f"127.0.0.1:{port}"]) == 0
            assert probe([f"0.0.0.0:{port}"]) == 0  # a server bound to all interfaces
        finally:
            server.stop(1)
    assert probe([f"127.0.0.1:{port}"]) == 1  # nothing listens any more


def test_dockerfile_runs_as_non_root_with_a_volume_and_a_health_check() -> None:
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    user = re.search(r"^USER (\S+)", final, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^VOLUME /data$", final, re.M)
    assert "CURATOR_DATA_DIR=/data" in final
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*server\.health_probe", final, re.M)
    assert "--only-binary=:all:" in DOCKERFILE  # no compiler in the image


def test_compose_has_prometheus_scraping_the_metrics_port() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    prom = (ROOT / "prometheus.yml").read_text()
    port = re.search(r'CURATOR_METRICS_PORT: "(\d+)"', compose)
    assert port and 'CURATOR_METRICS_HOST: "0.0.0.0"' in compose
    assert f'targets: ["curator:{port.group(1)}"]' in prom
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    assert f"EXPOSE 50051 {port.group(1)}" in DOCKERFILE


def _engine() -> str:
    for name in ("podman", "docker"):
        exe = shutil.which(name)
        if exe and subprocess.run([exe, "info"], capture_output=True, timeout=60).returncode == 0:
            return exe
    pytest.skip("no container engine (podman or docker) that runs here")


@pytest.mark.timeout(1800)
def test_image_builds_and_reports_serving() -> None:
    if os.environ.get("CURATOR_TEST_CONTAINER") != "1":
        pytest.skip("the image build takes minutes: set CURATOR_TEST_CONTAINER=1 to run it")
    engine = _engine()
    base = os.environ.get("CURATOR_TEST_BASE_IMAGE", "python:3.11-slim")
    if subprocess.run([engine, "image", "inspect", base], capture_output=True).returncode != 0:
        pulled = subprocess.run([engine, "pull", base], capture_output=True, text=True, timeout=300)
        if pulled.returncode != 0:
            pytest.skip(f"base image {base} absent and cannot be pulled: {pulled.stderr[-300:]}")
    tag = f"curator-db-test:{uuid.uuid4().hex[:8]}"
    build = [engine, "build", "--network=host", "--build-arg", f"BASE={base}", "-t", tag, "."]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = f"curator-test-{uuid.uuid4().hex[:8]}"
    try:
        run = [engine, "run", "-d", "--name", name, "--network=host"]
        run += ["-e", "CURATOR_ADDRESS=127.0.0.1:50741", tag]
        assert subprocess.run(run, capture_output=True).returncode == 0
        who = subprocess.run([engine, "exec", name, "id", "-u"], capture_output=True, text=True)
        assert who.stdout.strip() not in ("", "0")
        health = [engine, "exec", name, "python", "-m", "server.health_probe"]
        deadline = time.monotonic() + 180
        while subprocess.run(health, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the container never reported SERVING"
            time.sleep(2)
        logs = subprocess.run([engine, "logs", name], capture_output=True, text=True)
        assert "start-up: serving" in logs.stdout + logs.stderr
        key = subprocess.run([engine, "exec", name, "cat", "/data/admin.key"], capture_output=True)
        assert key.stdout.startswith(b"cdb_admin_")
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True)
