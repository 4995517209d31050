"""Checked by mypy (pyproject [tool.mypy] files, and tests/test_contract.py): the in-process
Database, the Client and the AsyncClient implement curator.api's Protocols. Never run."""

from __future__ import annotations

from client import Client
from client.aio import AsyncClient
from curator.api import (
    AdminAPI,
    AsyncAdminAPI,
    AsyncCacheAPI,
    AsyncCuratorAPI,
    AsyncVectorsAPI,
    CacheAPI,
    CuratorAPI,
    VectorsAPI,
)
from curator.database import Database


def database(db: Database) -> None:
    _admin: AdminAPI = db
    _vectors: VectorsAPI = db
    _cache: CacheAPI = db
    _all: CuratorAPI = db


def client(c: Client) -> None:
    _admin: AdminAPI = c
    _vectors: VectorsAPI = c
    _cache: CacheAPI = c
    _all: CuratorAPI = c


def async_client(c: AsyncClient) -> None:
    _admin: AsyncAdminAPI = c
    _vectors: AsyncVectorsAPI = c
    _cache: AsyncCacheAPI = c
    _all: AsyncCuratorAPI = c
