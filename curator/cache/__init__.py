"""The category-aware semantic cache for LLM gateways (above the index, on the same LMDB).

Light to import: `policy`, `fingerprint` and `load` need only numpy; the cache itself
(hnswlib) loads on first use of `SemanticCache`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "CATALOGUE",
    "CacheConfig",
    "CategoryPolicy",
    "LoadConfig",
    "SemanticCache",
    "make_fingerprint",
]

_WHERE = {
    "CATALOGUE": "curator.cache.policy",
    "CategoryPolicy": "curator.cache.policy",
    "LoadConfig": "curator.cache.load",
    "make_fingerprint": "curator.cache.fingerprint",
    "CacheConfig": "curator.cache.config",
    "SemanticCache": "curator.cache.semantic_cache",
}

if TYPE_CHECKING:
    from curator.cache.config import CacheConfig
    from curator.cache.fingerprint import make_fingerprint
    from curator.cache.load import LoadConfig
    from curator.cache.policy import CATALOGUE, CategoryPolicy
    from curator.cache.semantic_cache import SemanticCache


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'curator.cache' has no attribute {name!r}")
