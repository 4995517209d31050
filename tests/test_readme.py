"""The README stays true: its commands are the ones CI runs, and its SDK example works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curator.config import DatabaseConfig
from curator.database import Database
from server.app import create_server
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_commands_install_start_and_test() -> None:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None
    lines = [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]
    assert lines[0] == "pip install -e . && python -m server"
    assert lines[1] == 'pip install -e ".[test]" && python -m pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and "python -m pytest" in ci


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("section", "expected"),
    [("Quick start (SDK)", "doc 0"), ("Semantic cache (LLM gateways)", "True semantic")],
)
def test_sdk_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, section: str, expected: str
) -> None:
    code = re.search(rf"## {re.escape(section)}\n\n.*?```python\n(.*?)```", README, re.S)
    assert code is not None
    db = Database(DatabaseConfig(data_dir=str(tmp_path / "curator-data")), background=False)
    (tmp_path / "curator-data" / "admin.key").write_text("readme-admin\n")
    db.keys.ensure("readme-admin", None, "test")
    server = create_server(db, ServerConfig(address="127.0.0.1:0"))
    try:
        monkeypatch.chdir(tmp_path)
        source = code.group(1).replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
        exec(compile(source, "README.md", "exec"), {})
        assert expected in capsys.readouterr().out
    finally:
        server.stop(1)
        db.close()


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
