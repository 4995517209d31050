"""The container image: the health probe it uses, the Dockerfile and compose files, and (opt-in,
CURATOR_TEST_CONTAINER=1, with podman or docker and a base image present) a real build, the
server started inside it as its user, and a container run where the sandbox allows one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
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


def _build(engine: str, tag: str, *args: str, dockerfile: str | None = None) -> None:
    cmd = [engine, "build", "--network=host", "-t", tag, *args]
    if Path(engine).name == "podman":
        # chroot: RUN steps without an OCI runtime (sandboxes); docker: keeps the HEALTHCHECK
        cmd += ["--isolation=chroot", "--format=docker"]
    cmd += ["-f", "-", "."] if dockerfile else ["."]
    done = subprocess.run(
        cmd, cwd=ROOT, input=dockerfile, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    """(engine, tag) of the image built from the Dockerfile on CURATOR_TEST_BASE_IMAGE
    (default python:3.11-slim; where no registry of images is reachable, e.g. a Debian rootfs
    made by debootstrap with python3 and python3-venv, imported with `podman import`)."""
    if os.environ.get("CURATOR_TEST_CONTAINER") != "1":
        pytest.skip("the image build takes minutes: set CURATOR_TEST_CONTAINER=1 to run it")
    engine = _engine()
    base = os.environ.get("CURATOR_TEST_BASE_IMAGE", "python:3.11-slim")
    if subprocess.run([engine, "image", "inspect", base], capture_output=True).returncode != 0:
        pulled = subprocess.run([engine, "pull", base], capture_output=True, text=True, timeout=300)
        if pulled.returncode != 0:
            pytest.skip(f"base image {base} absent and cannot be pulled: {pulled.stderr[-300:]}")
    tag = f"curator-db-test:{uuid.uuid4().hex[:8]}"
    _build(engine, tag, "--build-arg", f"BASE={base}")
    yield engine, tag
    subprocess.run([engine, "rmi", "-f", tag], capture_output=True)


@pytest.mark.timeout(1800)
def test_image_serves_as_its_non_root_user(image: tuple[str, str]) -> None:
    # A build step on top of the image starts the server as the image's user, waits for the
    # health probe (the HEALTHCHECK command) and stops it: works where containers cannot run.
    engine, tag = image
    script = (
        "curator-server --address 127.0.0.1:50741 > /tmp/log 2>&1 & pid=$!; ok=1;"
        " for i in $(seq 120); do python -m server.health_probe 127.0.0.1:50741 && ok=0 && break;"
        " sleep 1; done; kill $pid; wait $pid; rc=$?; cat /tmp/log;"
        ' [ $ok = 0 ] && [ $rc = 0 ] && [ "$(id -u)" != 0 ]'
        " && grep -q 'start-up: serving' /tmp/log && grep -q cdb_admin_ /data/admin.key"
    )
    probe = f"FROM {tag}\nRUN {script}\n"
    _build(engine, f"{tag}-probe", "--no-cache", dockerfile=probe)
    subprocess.run([engine, "rmi", "-f", f"{tag}-probe"], capture_output=True)


@pytest.mark.timeout(600)
def test_image_runs_as_a_container(image: tuple[str, str]) -> None:
    engine, tag = image
    name = f"curator-test-{uuid.uuid4().hex[:8]}"
    run = [engine, "run", "-d", "--name", name, "--network=host"]
    started = subprocess.run(
        [*run, "-e", "CURATOR_ADDRESS=127.0.0.1:50742", tag], capture_output=True, text=True
    )
    try:
        if started.returncode != 0:
            pytest.skip(f"{engine} cannot run containers here: {started.stderr.strip()[-300:]}")
        who = subprocess.run([engine, "exec", name, "id", "-u"], capture_output=True, text=True)
        assert who.stdout.strip() not in ("", "0")
        health = [engine, "exec", name, "python", "-m", "server.health_probe"]
        deadline = time.monotonic() + 180
        while subprocess.run(health, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the container never reported SERVING"
            time.sleep(2)
        key = subprocess.run([engine, "exec", name, "cat", "/data/admin.key"], capture_output=True)
        assert key.stdout.startswith(b"cdb_admin_")
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True)
