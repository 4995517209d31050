"""Curator DB: a multi-tenant vector database (the in-process core).

The heavy modules (index, database) load on first use, so that `curator.errors` and
`curator.config` can be imported by the client SDK without faiss, numba or LMDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "And",
    "CuratorError",
    "CuratorIndex",
    "Database",
    "DatabaseConfig",
    "IndexConfig",
    "Label",
    "Metric",
    "Not",
    "Or",
    "SearchParams",
]

_WHERE = {
    "And": "curator.predicate",
    "Label": "curator.predicate",
    "Not": "curator.predicate",
    "Or": "curator.predicate",
    "CuratorError": "curator.errors",
    "CuratorIndex": "curator.index",
    "Database": "curator.database",
    "DatabaseConfig": "curator.config",
    "IndexConfig": "curator.config",
    "Metric": "curator.config",
    "SearchParams": "curator.config",
}

if TYPE_CHECKING:
    from curator.config import DatabaseConfig, IndexConfig, Metric, SearchParams
    from curator.database import Database
    from curator.errors import CuratorError
    from curator.index.curator_index import CuratorIndex
    from curator.predicate import And, Label, Not, Or


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'curator' has no attribute {name!r}")
