"""Client: the Python SDK of Curator DB (numpy in, numpy out), blocking gRPC.

>>> from client import Client
>>> with Client("127.0.0.1:50051", api_key="cdb_...") as db:          # doctest: +SKIP
...     db.upsert("docs", ids, vectors, documents=texts)
...     hits = db.search("docs", queries, k=10, with_documents=True)
...     hits.ids, hits.distances, hits.owners          # (nq, k) uint64, (nq, k) float32

Implements curator.api.CuratorAPI, like the in-process `Database` and the `AsyncClient`
(client.aio); every call's encoding lives once, in client.calls / client.cache. Errors raise
the same classes as the in-process database (curator.errors). Calls that fail with
UNAVAILABLE are retried with exponential backoff by gRPC itself; no other error is retried.
Imports neither faiss, hnswlib nor LMDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc

from client import cache, calls
from client.calls import Plan
from curator.cache.policy import CategoryPolicy
from curator.config import GRPC_RECONNECT_OPTIONS, IndexConfig, Metric, SearchParams
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

__all__ = ["Client", "channel_options"]

T = TypeVar("T")


def channel_options(retries: int, max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", calls.service_config(retries)),
        *GRPC_RECONNECT_OPTIONS,  # a restarted server is reached again within a second
    ]


class Client:
    """A connection to a Curator DB server; use it as a context manager.

    address: "host:port"; api_key: an admin or tenant key; tls: use TLS (root_certificates:
    PEM bytes of a private CA); timeout: default deadline of each call in seconds;
    retries: extra attempts on UNAVAILABLE; max_message_bytes: as the server's limit;
    metadata: more (key, value) pairs sent with every call.
    """

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
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        opts = channel_options(retries, max_message_bytes)
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self._stubs = {
            "Admin": pb_grpc.AdminStub(self._channel),
            "Vectors": pb_grpc.VectorsStub(self._channel),
            "Cache": pb_grpc.CacheStub(self._channel),
        }
        self._metadata = (("authorization", f"Bearer {api_key}"), *metadata)
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, plan: Plan[T]) -> T:
        """Make the plan's calls in turn, feeding each response back."""
        try:
            call = next(plan)
            while True:
                method = getattr(self._stubs[call.service], call.method)
                try:
                    r = method(
                        call.request, metadata=self._metadata, timeout=call.timeout or self.timeout
                    )
                except grpc.RpcError as e:
                    raise calls.error_from(e) from None
                call = plan.send(r)
        except StopIteration as done:
            return done.value

    # -- administration (curator.api.AdminAPI) ---------------------------------------------
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "l2",
        config: IndexConfig | None = None,
    ) -> CollectionInfo:
        return self._run(calls.create_collection(name, dim, metric, config))

    def list_collections(self) -> list[str]:
        return self._run(calls.list_collections())

    def describe_collection(self, name: str) -> CollectionInfo:
        """A tenant key sees its own vector count only."""
        return self._run(calls.describe_collection(name))

    def drop_collection(self, name: str) -> None:
        self._run(calls.drop_collection(name))

    def create_tenant(self, name: str) -> None:
        self._run(calls.create_tenant(name))

    def list_tenants(self) -> list[str]:
        return self._run(calls.list_tenants())

    def drop_tenant(self, name: str) -> None:
        self._run(calls.drop_tenant(name))

    def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        """Let `tenant`'s key grant its vectors to `with_tenant` (admin)."""
        self._run(calls.allow_sharing(tenant, with_tenant, allowed))

    def train(self, name: str) -> bool:
        """(Re)train a collection's shared tree now, e.g. after a bulk load (admin)."""
        return self._run(calls.train(name))

    def issue_key(self, tenant: str | None, description: str = "") -> IssuedKey:
        """A new key for `tenant` (None: an admin key): (key_id, secret), shown only here."""
        return self._run(calls.issue_key(tenant, description))

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        return self._run(calls.list_keys(tenant))

    def revoke_key(self, key_id: str) -> None:
        self._run(calls.revoke_key(key_id))

    def rotate_key(self, key_id: str) -> IssuedKey:
        """key_id "": the key this client uses (which then stops working)."""
        return self._run(calls.rotate_key(key_id))

    def backup(self, name: str) -> str:
        """Consistent copy of the live database in the server's backup directory."""
        return self._run(calls.backup(name))

    def server_info(self) -> ServerInfo:
        return self._run(calls.server_info())

    # -- vectors (curator.api.VectorsAPI) --------------------------------------------------
    def upsert(
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
        return self._run(plan)

    def get(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> Records:
        """`owner`'s vectors among `ids` (default: the acting tenant's) that the acting tenant
        may read, in request order."""
        return self._run(calls.get(collection, ids, tenant, owner))

    def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult:
        return self._run(calls.delete(collection, ids, tenant, owner))

    def grant(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        """Share `owner`'s vectors (default: the key's tenant's) with `to_tenant`."""
        return self._run(calls.access("Grant", collection, ids, to_tenant, tenant, owner))

    def revoke(
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
        return self._run(calls.access("Revoke", collection, ids, to_tenant, tenant, owner))

    def count(self, collection: str, *, tenant: str | None = None) -> int:
        return self._run(calls.count(collection, tenant))

    def list_ids(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> IdPage:
        """A page of `owner`'s (default: the key's tenant's) ids, ascending from above
        `after`; pass `next_after` back for the next page."""
        return self._run(calls.list_ids(collection, tenant, owner, after, limit))

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
        return self._run(plan)

    # -- semantic cache (curator.api.CacheAPI) -----------------------------------------------
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
    ) -> CacheLookup:
        """embedding None: the server embeds the prompt (if it runs an embedder)."""
        plan = cache.lookup(prompt, embedding, tenant, model, fingerprint, category, wait_s)
        return self._run(plan)

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
        return self._run(plan)

    def cache_invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        return self._run(cache.invalidate(tenant, category, model, fingerprint))

    def cache_feedback(
        self,
        *,
        tenant: str | None = None,
        lookup_id: int = 0,
        entry_id: int = 0,
        correct: bool,
    ) -> dict[str, Any]:
        """Was the answer of a lookup (`lookup_id`, or the latest lookup served by
        `entry_id`) right? Returns the category's calibration state."""
        return self._run(cache.feedback(tenant, lookup_id, entry_id, correct))

    def cache_set_policy(
        self, category: str, *, tenant: str | None = None, **fields: Any
    ) -> CategoryPolicy:
        return self._run(cache.set_policy(category, tenant, fields))

    def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> bool:
        return self._run(cache.reset_policy(category, tenant))

    def cache_policies(
        self, *, tenant: str | None = None, model: str = ""
    ) -> dict[str, PolicyState]:
        return self._run(cache.policies(tenant, model))

    def cache_add_examples(
        self, category: str, embeddings: Any, *, tenant: str | None = None
    ) -> int:
        return self._run(cache.add_examples(category, embeddings, tenant))

    def cache_report_load(self, model: str, load: float) -> ModelLoad:
        """Admin only: a model's utilisation (1.0 = at capacity)."""
        return self._run(cache.report_load(model, load))

    def cache_set_capacity(self, model: str, rps: float) -> None:
        """Admin only: the model's capacity; the server then measures its load."""
        self._run(cache.set_capacity(model, rps))

    def cache_stats(self, *, tenant: str | None = None) -> CacheStats:
        return self._run(cache.stats(tenant))
