"""AsyncClient: the Python SDK on grpc.aio, for asyncio applications.

>>> from client.aio import AsyncClient
>>> async with AsyncClient("127.0.0.1:50051", api_key="cdb_...") as db:   # doctest: +SKIP
...     await db.upsert("docs", ids, vectors, documents=texts)
...     hits = await db.search("docs", queries, k=10, with_documents=True)

The same methods, arguments, results and errors as the blocking `Client` (each one awaited):
it implements curator.api.AsyncCuratorAPI and runs the very same call plans
(client.calls / client.cache). Create it inside the running event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from client import cache, calls
from client.calls import Plan
from client.client import channel_options
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
from curator_api.v1 import curator_pb2_grpc as pb_grpc

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """A grpc.aio connection to a Curator DB server; use it as an async context manager.
    Arguments as `client.Client`."""

    def __init__(
        self,
        address: str,
        api_key: str,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        opts = channel_options(retries, max_message_bytes)
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.aio.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=opts)
        self._stubs = {
            "Admin": pb_grpc.AdminStub(self._channel),
            "Vectors": pb_grpc.VectorsStub(self._channel),
            "Cache": pb_grpc.CacheStub(self._channel),
        }
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, plan: Plan[T]) -> T:
        """Make the plan's calls in turn, feeding each response back."""
        try:
            call = next(plan)
            while True:
                method = getattr(self._stubs[call.service], call.method)
                try:
                    r = await method(
                        call.request, metadata=self._metadata, timeout=call.timeout or self.timeout
                    )
                except grpc.RpcError as e:
                    raise calls.error_from(e) from None
                call = plan.send(r)
        except StopIteration as done:
            return done.value

    # -- administration (curator.api.AdminAPI) ---------------------------------------------
    async def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "l2",
        config: IndexConfig | None = None,
    ) -> CollectionInfo:
        return await self._run(calls.create_collection(name, dim, metric, config))

    async def list_collections(self) -> list[str]:
        return await self._run(calls.list_collections())

    async def describe_collection(self, name: str) -> CollectionInfo:
        """A tenant key sees its own vector count only."""
        return await self._run(calls.describe_collection(name))

    async def drop_collection(self, name: str) -> None:
        await self._run(calls.drop_collection(name))

    async def create_tenant(self, name: str) -> None:
        await self._run(calls.create_tenant(name))

    async def list_tenants(self) -> list[str]:
        return await self._run(calls.list_tenants())

    async def drop_tenant(self, name: str) -> None:
        await self._run(calls.drop_tenant(name))

    async def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        """Let `tenant`'s key grant its vectors to `with_tenant` (admin)."""
        await self._run(calls.allow_sharing(tenant, with_tenant, allowed))

    async def train(self, name: str) -> bool:
        """(Re)train a collection's shared tree now, e.g. after a bulk load (admin)."""
        return await self._run(calls.train(name))

    async def issue_key(self, tenant: str | None, description: str = "") -> IssuedKey:
        """A new key for `tenant` (None: an admin key): (key_id, secret), shown only here."""
        return await self._run(calls.issue_key(tenant, description))

    async def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        return await self._run(calls.list_keys(tenant))

    async def revoke_key(self, key_id: str) -> None:
        await self._run(calls.revoke_key(key_id))

    async def rotate_key(self, key_id: str) -> IssuedKey:
        """key_id "": the key this client uses (which then stops working)."""
        return await self._run(calls.rotate_key(key_id))

    async def backup(self, name: str) -> str:
        """Consistent copy of the live database in the server's backup directory."""
        return await self._run(calls.backup(name))

    async def server_info(self) -> ServerInfo:
        return await self._run(calls.server_info())

    # -- vectors (curator.api.VectorsAPI) --------------------------------------------------
    async def upsert(
        self,
        collection: str,
        ids: Any,
        vectors: Any,
        documents: Sequence[Document] | None = None,
        *,
        tenant: str | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> WriteResult:
        """Insert or replace vectors (owned by the key's tenant, or by `tenant` for the admin),
        in batches (each atomic) with an optional progress bar."""
        plan = calls.upsert(
            collection,
            ids,
            vectors,
            documents,
            tenant,
            batch_size,
            progress,
            self.max_message_bytes,
        )
        return await self._run(plan)

    async def get(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> Records:
        """`owner`'s vectors among `ids` (default: the acting tenant's) that the acting tenant
        may read, in request order."""
        return await self._run(calls.get(collection, ids, tenant, owner))

    async def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult:
        return await self._run(calls.delete(collection, ids, tenant, owner))

    async def grant(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        """Share `owner`'s vectors (default: the key's tenant's) with `to_tenant`."""
        return await self._run(calls.access("Grant", collection, ids, to_tenant, tenant, owner))

    async def revoke(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        """Take `to_tenant`'s access away; a grantee drops a share it received by naming
        itself as `to_tenant` and the `owner`."""
        return await self._run(calls.access("Revoke", collection, ids, to_tenant, tenant, owner))

    async def count(self, collection: str, *, tenant: str | None = None) -> int:
        return await self._run(calls.count(collection, tenant))

    async def list_ids(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> IdPage:
        return await self._run(calls.list_ids(collection, tenant, owner, after, limit))

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
        timeout: float | None = None,
    ) -> SearchResult:
        """Nearest `k` readable vectors for each row of `queries` (nq, d): ids (nq, k) int64
        (-1 padded), distances (nq, k) float32 (inf padded). A tenant key searches its own
        tenant; the admin names the tenant(s) whose union to search."""
        plan = calls.search(
            collection,
            queries,
            k,
            tenant,
            params,
            with_documents,
            with_vectors,
            require_all,
            timeout,
            where,
            explain,
        )
        return await self._run(plan)

    # -- semantic cache (curator.api.CacheAPI) -----------------------------------------------
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
    ) -> CacheLookup:
        """embedding None: the server embeds the prompt (if it runs an embedder)."""
        plan = cache.lookup(prompt, embedding, tenant, model, fingerprint, category, wait_s)
        return await self._run(plan)

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
    ) -> CacheStored:
        plan = cache.store(
            prompt,
            embedding,
            response,
            tenant,
            model,
            fingerprint,
            category,
            ttl_s,
            latency_s,
            tokens,
        )
        return await self._run(plan)

    async def cache_invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        return await self._run(cache.invalidate(tenant, category, model, fingerprint))

    async def cache_feedback(
        self,
        *,
        tenant: str | None = None,
        lookup_id: int = 0,
        entry_id: int = 0,
        correct: bool,
    ) -> dict[str, Any]:
        """Was the answer of a lookup (`lookup_id`, or the latest lookup served by
        `entry_id`) right? Returns the category's calibration state."""
        return await self._run(cache.feedback(tenant, lookup_id, entry_id, correct))

    async def cache_set_policy(
        self, category: str, *, tenant: str | None = None, **fields: Any
    ) -> CategoryPolicy:
        return await self._run(cache.set_policy(category, tenant, fields))

    async def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> bool:
        return await self._run(cache.reset_policy(category, tenant))

    async def cache_policies(
        self, *, tenant: str | None = None, model: str = ""
    ) -> dict[str, PolicyState]:
        return await self._run(cache.policies(tenant, model))

    async def cache_add_examples(
        self, category: str, embeddings: Any, *, tenant: str | None = None
    ) -> int:
        return await self._run(cache.add_examples(category, embeddings, tenant))

    async def cache_report_load(self, model: str, load: float) -> ModelLoad:
        """Admin only: a model's utilisation (1.0 = at capacity)."""
        return await self._run(cache.report_load(model, load))

    async def cache_set_capacity(self, model: str, rps: float) -> None:
        """Admin only: the model's capacity; the server then measures its load."""
        await self._run(cache.set_capacity(model, rps))

    async def cache_stats(self, *, tenant: str | None = None) -> CacheStats:
        return await self._run(cache.stats(tenant))
