"""The README stays true: its commands are the ones CI runs, and every python block runs as it
is, twice (blocks must be re-runnable), against a live `python -m server` process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from curator.config import DatabaseConfig
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
#: What each block prints on every run (a block that is not listed fails the test).
EXPECTED = {
    "Quick start (SDK)": ["acme's API key: cdb_", "doc 0"],
    "Semantic cache (LLM gateways)": ["True semantic"],
    "Gateway adapters: LangChain and LiteLLM": ["Paris.\nParis.\nShakespeare.\nShakespeare.\n"],
    "In-process use": ["(5, 10) ["],
}


def _section(block: str) -> str:
    heading = re.findall(r"^#+ (.*)$", README[: README.index(block)], re.M)
    return heading[-1]


def test_first_commands_install_start_and_test() -> None:
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "pytest" in b)
    lines = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert lines[0] == "pip install . && curator-server"
    assert lines[1:] == ['pip install -e ".[test]" && python -m pytest']
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and "python -m pytest" in ci
    assert README.index("## Prerequisites") < README.index(block)


def test_every_python_block_is_checked() -> None:
    assert sorted(_section(b) for b in BLOCKS) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A `python -m server` process with its data in <cwd>/curator-data (the README's layout),
    generating its own admin key there; yields (cwd, port)."""
    cwd = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = cwd / "server.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--address", "127.0.0.1:0", "--log-format", "text"],
            stderr=err,
            cwd=cwd,
            env=env,
        )
    try:
        deadline = time.monotonic() + 240
        while "start-up: serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        port = int(re.findall(r"\(port (\d+)\)", log.read_text())[0])
        yield cwd, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("section", sorted(EXPECTED))
def test_python_block_runs_twice(served: tuple[Path, int], section: str) -> None:
    cwd, port = served
    (block,) = [b for b in BLOCKS if _section(b) == section]
    source = block.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT)]))}
    for run in (1, 2):
        done = subprocess.run(
            [sys.executable, "-c", source], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"run {run}:\n{done.stderr}"
        for expected in EXPECTED[section]:
            assert expected in done.stdout, f"run {run}: {expected!r} not in\n{done.stdout}"


def _bytes_or_count(text: str) -> int:
    """ "1 MiB" -> 1048576, "100,000" -> 100000."""
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    number, _, unit = text.strip().partition(" ")
    return int(number.replace(",", "")) * units.get(unit, 1)


def test_limits_section_states_the_real_defaults() -> None:
    """Every `XConfig.field` of "Limits a tenant is held to" exists with the default stated."""
    from curator.cache.config import CacheConfig
    from curator.validation import MAX_K
    from server.fairness import default_tenant_limit

    section = README.split("## Limits a tenant is held to")[1].split("\n## ")[0]
    configs = {c.__name__: c() for c in (DatabaseConfig, ServerConfig, CacheConfig)}
    checked = 0
    for row in re.findall(r"^\| .*? \| (.*?) \| (.*?) \|$", section, re.M):
        settings = re.findall(r"`(\w+Config)\.(\w+)`", row[0])
        for (cls, field), default in zip(settings, row[1].split(" / "), strict=False):
            value = getattr(configs[cls], field)
            if field == "max_tenant_inflight":
                assert value == 0 and default.startswith("half of `threads`")
                threads = ServerConfig().threads
                assert f"{threads} threads: {default_tenant_limit(threads)}" in default
            else:
                assert _bytes_or_count(default) == value, (cls, field, default)
            checked += 1
        if "MAX_K" in row[0]:
            assert _bytes_or_count(row[1]) == MAX_K
    assert checked >= 10
