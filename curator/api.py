"""The one contract of Curator DB: what the in-process `Database`, the gRPC `Client` and the
`AsyncClient` all offer, with the same names, arguments and typed results.

`tenant=None` means "the principal": over the wire, the key's own tenant (the admin key acts
for none, so calls that need an owner raise InvalidArgument); in-process, the admin. A tenant
key may only act for its own tenant (PermissionDenied otherwise). Errors are the classes of
`curator.errors` on every side.

mypy holds the three implementations to these Protocols (tests/typing_contract.py), and
tests/test_contract.py holds the async Protocols to the sync ones and runs one scenario on
all three. Light to import (no numpy-heavy or grpc modules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from curator.cache.policy import CategoryPolicy
from curator.config import IndexConfig, Metric, SearchParams
from curator.predicate import Predicate
from curator.results import (
    CacheLookup,
    CacheStats,
    CacheStored,
    CollectionInfo,
    Document,
    IdPage,
    IssuedKey,
    KeyInfo,
    ModelLoad,
    PolicyState,
    Records,
    SearchResult,
    ServerInfo,
    WriteResult,
)

__all__ = [
    "AdminAPI",
    "AsyncAdminAPI",
    "AsyncCacheAPI",
    "AsyncCuratorAPI",
    "AsyncVectorsAPI",
    "CacheAPI",
    "CuratorAPI",
    "VectorsAPI",
]


class AdminAPI(Protocol):
    """Collections, tenants, API keys, backups (the admin's calls; a tenant key may describe
    and list collections and read server_info)."""

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "l2",
        config: IndexConfig | None = None,
    ) -> CollectionInfo: ...

    def list_collections(self) -> list[str]: ...

    def describe_collection(self, name: str) -> CollectionInfo: ...

    def drop_collection(self, name: str) -> None: ...

    def create_tenant(self, name: str) -> None: ...

    def list_tenants(self) -> list[str]: ...

    def drop_tenant(self, name: str) -> None: ...

    def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        """Let `tenant`'s key grant its vectors to `with_tenant` (or no longer)."""
        ...

    def train(self, name: str) -> bool:
        """(Re)train a collection's shared tree now (after a bulk load)."""
        ...

    def issue_key(self, tenant: str | None, description: str = "") -> IssuedKey:
        """A new key for `tenant` (None: an admin key); the secret is shown only here."""
        ...

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        """Every key (admin keys included), or `tenant`'s keys."""
        ...

    def revoke_key(self, key_id: str) -> None:
        """FailedPrecondition for the last admin key."""
        ...

    def rotate_key(self, key_id: str) -> IssuedKey:
        """A new key for the same tenant (or admin) and description; the old one is revoked."""
        ...

    def backup(self, name: str) -> str:
        """A consistent copy of the live database in the new folder `name` under the backup
        directory; returns its path. The copy opens as a data directory (restore)."""
        ...

    def server_info(self) -> ServerInfo: ...


class VectorsAPI(Protocol):
    """Vectors of a collection, owned by tenants and shared through grants."""

    def upsert(
        self,
        collection: str,
        ids: Any,
        vectors: Any,
        documents: Sequence[Document] | None = None,
        *,
        tenant: str | None = None,
    ) -> WriteResult: ...

    def get(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> Records: ...

    def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult: ...

    def grant(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult: ...

    def revoke(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult: ...

    def count(self, collection: str, *, tenant: str | None = None) -> int: ...

    def list_ids(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> IdPage: ...

    def search(
        self,
        collection: str,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | Sequence[str] | None = None,
        params: SearchParams | None = None,
        with_documents: bool = False,
        with_vectors: bool = False,
        require_all: bool = False,
        where: Predicate | None = None,
        explain: bool = False,
    ) -> SearchResult: ...


class CacheAPI(Protocol):
    """The semantic cache (see curator.cache.semantic_cache for the semantics)."""

    def cache_lookup(
        self,
        prompt: str,
        embedding: Any,
        *,
        tenant: str | None = None,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        wait_s: float = 0.0,
    ) -> CacheLookup: ...

    def cache_store(
        self,
        prompt: str,
        embedding: Any,
        response: bytes | str,
        *,
        tenant: str | None = None,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        ttl_s: float | None = None,
        latency_s: float = 0.0,
        tokens: int = 0,
    ) -> CacheStored: ...

    def cache_invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int: ...

    def cache_feedback(
        self,
        *,
        tenant: str | None = None,
        lookup_id: int = 0,
        entry_id: int = 0,
        correct: bool,
    ) -> dict[str, Any]:
        """Report whether a served answer was right (calibrates the category's threshold)."""
        ...

    def cache_set_policy(
        self, category: str, *, tenant: str | None = None, **fields: Any
    ) -> CategoryPolicy: ...

    def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> bool: ...

    def cache_policies(
        self, *, tenant: str | None = None, model: str = ""
    ) -> dict[str, PolicyState]: ...

    def cache_add_examples(
        self, category: str, embeddings: Any, *, tenant: str | None = None
    ) -> int: ...

    def cache_report_load(self, model: str, load: float) -> ModelLoad: ...

    def cache_set_capacity(self, model: str, rps: float) -> None: ...

    def cache_stats(self, *, tenant: str | None = None) -> CacheStats: ...


class CuratorAPI(AdminAPI, VectorsAPI, CacheAPI, Protocol):
    """Everything: what `Database` and `Client` both are."""


# -- the same, awaited (client.aio.AsyncClient) ---------------------------------------------------
class AsyncAdminAPI(Protocol):
    async def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "l2",
        config: IndexConfig | None = None,
    ) -> CollectionInfo: ...

    async def list_collections(self) -> list[str]: ...

    async def describe_collection(self, name: str) -> CollectionInfo: ...

    async def drop_collection(self, name: str) -> None: ...

    async def create_tenant(self, name: str) -> None: ...

    async def list_tenants(self) -> list[str]: ...

    async def drop_tenant(self, name: str) -> None: ...

    async def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        """Let `tenant`'s key grant its vectors to `with_tenant` (or no longer)."""
        ...

    async def train(self, name: str) -> bool:
        """(Re)train a collection's shared tree now (after a bulk load)."""
        ...

    async def issue_key(self, tenant: str | None, description: str = "") -> IssuedKey: ...

    async def list_keys(self, tenant: str | None = None) -> list[KeyInfo]: ...

    async def revoke_key(self, key_id: str) -> None: ...

    async def rotate_key(self, key_id: str) -> IssuedKey: ...

    async def backup(self, name: str) -> str: ...

    async def server_info(self) -> ServerInfo: ...


class AsyncVectorsAPI(Protocol):
    async def upsert(
        self,
        collection: str,
        ids: Any,
        vectors: Any,
        documents: Sequence[Document] | None = None,
        *,
        tenant: str | None = None,
    ) -> WriteResult: ...

    async def get(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> Records: ...

    async def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult: ...

    async def grant(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult: ...

    async def revoke(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult: ...

    async def count(self, collection: str, *, tenant: str | None = None) -> int: ...

    async def list_ids(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> IdPage: ...

    async def search(
        self,
        collection: str,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | Sequence[str] | None = None,
        params: SearchParams | None = None,
        with_documents: bool = False,
        with_vectors: bool = False,
        require_all: bool = False,
        where: Predicate | None = None,
        explain: bool = False,
    ) -> SearchResult: ...


class AsyncCacheAPI(Protocol):
    async def cache_lookup(
        self,
        prompt: str,
        embedding: Any,
        *,
        tenant: str | None = None,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        wait_s: float = 0.0,
    ) -> CacheLookup: ...

    async def cache_store(
        self,
        prompt: str,
        embedding: Any,
        response: bytes | str,
        *,
        tenant: str | None = None,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        ttl_s: float | None = None,
        latency_s: float = 0.0,
        tokens: int = 0,
    ) -> CacheStored: ...

    async def cache_invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int: ...

    async def cache_feedback(
        self,
        *,
        tenant: str | None = None,
        lookup_id: int = 0,
        entry_id: int = 0,
        correct: bool,
    ) -> dict[str, Any]:
        """Report whether a served answer was right (calibrates the category's threshold)."""
        ...

    async def cache_set_policy(
        self, category: str, *, tenant: str | None = None, **fields: Any
    ) -> CategoryPolicy: ...

    async def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> bool: ...

    async def cache_policies(
        self, *, tenant: str | None = None, model: str = ""
    ) -> dict[str, PolicyState]: ...

    async def cache_add_examples(
        self, category: str, embeddings: Any, *, tenant: str | None = None
    ) -> int: ...

    async def cache_report_load(self, model: str, load: float) -> ModelLoad: ...

    async def cache_set_capacity(self, model: str, rps: float) -> None: ...

    async def cache_stats(self, *, tenant: str | None = None) -> CacheStats: ...


class AsyncCuratorAPI(AsyncAdminAPI, AsyncVectorsAPI, AsyncCacheAPI, Protocol):
    """Everything, awaited: what `AsyncClient` is."""
