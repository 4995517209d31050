"""Layers import downward only (read from the source, so no import order can hide a
violation): the core knows no wire, the wire conversions know neither server nor client, the
server never imports the client SDK, and the SDK never imports the server or the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "curator": ("grpc", "server", "client", "curator_api", "fastapi", "starlette", "uvicorn"),
    "curator_api": (
        "server",
        "client",
        "curator.database",
        "curator.index",
        "curator.storage",
        "fastapi",
        "grpc",
    ),
    "server": ("client",),
    "client": ("server", "curator.database", "curator.index", "curator.storage", "lmdb", "faiss"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _hand_written(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "_pb2" not in p.name]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_downward_only(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _hand_written(package)
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert bad == []


def test_the_check_sees_imports() -> None:
    found = _imports(ROOT / "server" / "service.py")
    assert {"curator.database", "curator_api.v1"} <= found
