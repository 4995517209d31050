"""Curator DB: a multi-tenant vector database (the in-process core)."""

from curator.config import IndexConfig, Metric, SearchParams
from curator.errors import CuratorError
from curator.index import CuratorIndex

__all__ = ["CuratorError", "CuratorIndex", "IndexConfig", "Metric", "SearchParams"]
