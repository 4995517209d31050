"""Client: the Python SDK of Curator DB (numpy in, numpy out).

>>> from client import Client
>>> with Client("127.0.0.1:50051", api_key="cdb_...") as db:          # doctest: +SKIP
...     db.upsert("docs", ids, vectors, documents=texts)
...     hits = db.search("docs", queries, k=10, with_documents=True)
...     hits.ids, hits.distances, hits.owners          # (nq, k) uint64, (nq, k) float32

Errors raise the same classes as the in-process database (curator.errors). Calls that fail
with UNAVAILABLE are retried with exponential backoff by gRPC itself (its retry policy); no
other error is retried. Imports neither faiss, hnswlib nor LMDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from client.cache import CacheCalls
from curator import errors
from curator.config import Metric, SearchParams
from curator.results import Document, Records, SearchResult, WriteResult
from curator.validation import as_ids
from curator_api import convert
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc

__all__ = ["Client"]

# The status code of each error class is its `code` (as the server maps them), so the same
# mistake raises the same class in-process and over the wire.
_ERRORS: dict[grpc.StatusCode, type[errors.CuratorError]] = {
    grpc.StatusCode[cls.code]: cls for cls in errors.CuratorError.__subclasses__()
}


def _service_config(retries: int) -> str:
    policy = {
        "maxAttempts": max(2, retries + 1),
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [
                        {"service": "curator.v1.Admin"},
                        {"service": "curator.v1.Vectors"},
                        {"service": "curator.v1.Cache"},
                    ],
                    "retryPolicy": policy,
                }
            ]
        }
    )


class Client(CacheCalls):
    """A connection to a Curator DB server; use it as a context manager.

    address: "host:port"; api_key: an admin or tenant key; tls: use TLS (root_certificates:
    PEM bytes of a private CA); timeout: default deadline of each call in seconds;
    retries: extra attempts on UNAVAILABLE; max_message_bytes: as the server's limit.
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
    ) -> None:
        opts = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config(retries)),
        ]
        if tls:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self._admin = pb_grpc.AdminStub(self._channel)
        self._vectors = pb_grpc.VectorsStub(self._channel)
        self._cache = pb_grpc.CacheStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            cls = _ERRORS.get(e.code())
            if cls is None:
                raise
            raise cls(e.details()) from None

    # -- administration ------------------------------------------------------------------
    def create_collection(
        self, name: str, dim: int, metric: str = "l2", **index_params: int
    ) -> dict[str, Any]:
        """index_params: branching, max_leaf_size, max_sl_size, train_min_vectors."""
        req = pb.CreateCollectionRequest(
            name=name,
            dim=dim,
            metric=convert.metric_to_pb(Metric.parse(metric).value),
            index=pb.IndexParams(**index_params),
        )
        return _info(self._call(self._admin.CreateCollection, req))

    def list_collections(self) -> list[str]:
        pages = self._pages(self._admin.ListCollections, pb.ListRequest, "collections")
        return [c.name for c in pages]

    def describe_collection(self, name: str) -> dict[str, Any]:
        return _info(self._call(self._admin.DescribeCollection, pb.CollectionRef(name=name)))

    def drop_collection(self, name: str) -> None:
        self._call(self._admin.DropCollection, pb.CollectionRef(name=name))

    def train(self, name: str) -> bool:
        """(Re)train a collection's shared tree now, e.g. after a bulk load (admin)."""
        return bool(self._call(self._admin.Train, pb.CollectionRef(name=name)).trained)

    def create_tenant(self, name: str) -> None:
        self._call(self._admin.CreateTenant, pb.TenantRef(name=name))

    def list_tenants(self) -> list[str]:
        return list(self._pages(self._admin.ListTenants, pb.ListRequest, "tenants"))

    def drop_tenant(self, name: str) -> None:
        self._call(self._admin.DropTenant, pb.TenantRef(name=name))

    def issue_key(self, tenant: str, description: str = "") -> tuple[str, str]:
        """A new API key for `tenant`: (key_id, secret). The secret is shown only here."""
        r = self._call(
            self._admin.IssueKey, pb.IssueKeyRequest(tenant=tenant, description=description)
        )
        return r.key_id, r.api_key

    def list_keys(self, tenant: str = "") -> list[dict[str, Any]]:
        return [
            {
                "key_id": k.key_id,
                "tenant": k.tenant,
                "description": k.description,
                "created": k.created,
            }
            for k in self._pages(self._admin.ListKeys, pb.ListKeysRequest, "keys", tenant=tenant)
        ]

    def revoke_key(self, key_id: str) -> None:
        self._call(self._admin.RevokeKey, pb.RevokeKeyRequest(key_id=key_id))

    def backup(self, name: str) -> str:
        """Consistent copy of the live database in the server's backup directory."""
        return str(self._call(self._admin.Backup, pb.BackupRequest(name=name)).path)

    def server_info(self) -> dict[str, Any]:
        r = self._call(self._admin.ServerInfo, pb.Empty())
        return {
            "version": r.version,
            "principal": r.principal,
            "seq": r.seq,
            "collections": r.collections,
            "tenants": r.tenants,
            "uptime_seconds": r.uptime_seconds,
        }

    def _pages(self, method: Any, request_type: Any, field: str, **kw: Any) -> Iterator[Any]:
        token = ""
        while True:
            r = self._call(method, request_type(page_token=token, **kw))
            yield from getattr(r, field)
            token = r.next_page_token
            if not token:
                return

    # -- vectors -------------------------------------------------------------------------
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
        """Insert or replace vectors (owned by the key's tenant, or by `tenant` for the admin).
        Large inputs are sent in batches (each one atomic) with an optional progress bar;
        the result carries the last batch's seq and the total count."""
        ids = as_ids(ids)
        x = np.asarray(vectors, np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or len(x) != len(ids):
            raise errors.InvalidArgument(
                f"expected vectors of shape ({len(ids)}, d), got {x.shape}"
            )
        if documents is not None and len(documents) != len(ids):
            raise errors.InvalidArgument(
                f"expected one document per id, got {len(documents)} documents for {len(ids)} ids"
            )
        if batch_size is None:  # keep each request well under the message limit
            batch_size = max(1, min(10_000, self.max_message_bytes // 4 // (4 * x.shape[1] + 64)))
        seq, count, tseq = 0, 0, 0
        starts = range(0, max(len(ids), 1), batch_size)
        for s in tqdm(starts, desc="upsert", unit="batch", disable=not progress):
            part = slice(s, s + batch_size)
            req = pb.UpsertRequest(
                collection=collection,
                tenant=tenant or "",
                ids=ids[part].tolist(),
                vectors=convert.encode_matrix(x[part]),
            )
            if documents is not None:
                req.documents.extend(convert.encode_document(d) for d in documents[part])
            r = self._call(self._vectors.Upsert, req)
            seq, count, tseq = r.seq, count + r.count, r.tenant_seq
        return WriteResult(seq, count, tseq)

    def get(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> Records:
        """`owner`'s vectors among `ids` (default: the acting tenant's) that the acting tenant
        may read, in request order."""
        r = self._call(
            self._vectors.Get,
            pb.GetRequest(
                collection=collection,
                tenant=tenant or "",
                owner=owner or "",
                ids=as_ids(ids, unique=False).tolist(),
            ),
        )
        return Records(
            np.array(r.ids, np.uint64),
            convert.decode_matrix(r.vectors),
            list(r.owners),
            [convert.decode_document(d) for d in r.documents],
        )

    def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult:
        r = self._call(
            self._vectors.Delete,
            pb.DeleteRequest(
                collection=collection,
                tenant=tenant or "",
                owner=owner or "",
                ids=as_ids(ids, unique=False).tolist(),
            ),
        )
        return WriteResult(r.seq, r.count, r.tenant_seq)

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
        return self._access(self._vectors.Grant, collection, ids, to_tenant, tenant, owner)

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
        return self._access(self._vectors.Revoke, collection, ids, to_tenant, tenant, owner)

    def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        """Let `tenant`'s key grant to `with_tenant` (admin)."""
        self._call(
            self._admin.AllowSharing,
            pb.AllowSharingRequest(tenant=tenant, with_tenant=with_tenant, allowed=allowed),
        )

    def _access(
        self,
        method: Any,
        collection: str,
        ids: Any,
        to_tenant: str,
        tenant: str | None,
        owner: str | None,
    ) -> WriteResult:
        r = self._call(
            method,
            pb.AccessRequest(
                collection=collection,
                tenant=tenant or "",
                owner=owner or "",
                to_tenant=to_tenant,
                ids=as_ids(ids, unique=False).tolist(),
            ),
        )
        return WriteResult(r.seq, r.count, r.tenant_seq)

    def count(self, collection: str, *, tenant: str | None = None) -> int:
        return int(
            self._call(
                self._vectors.Count, pb.CountRequest(collection=collection, tenant=tenant or "")
            ).count
        )

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
        timeout: float | None = None,
    ) -> SearchResult:
        """Nearest `k` readable vectors for each row of `queries` (nq, d): ids (nq, k) uint64
        (padded with NO_ID), distances (nq, k) float32 (inf padded), owners. A tenant key
        searches its own tenant; the admin names the tenant(s) whose union to search."""
        q = np.asarray(queries, np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        tenants = [tenant] if isinstance(tenant, str) else list(tenant or [])
        req = pb.SearchRequest(
            collection=collection,
            tenants=tenants,
            queries=convert.encode_matrix(q),
            k=k,
            with_documents=with_documents,
            with_vectors=with_vectors,
            require_all=require_all,
        )
        if params is not None:
            req.params.search_ef = params.search_ef
            req.params.beam_size = params.beam_size
            req.params.variance_boost = params.variance_boost
            req.params.exact_search_threshold = params.exact_search_threshold
        r = self._call(self._vectors.Search, req, timeout)
        ids = np.array(r.ids, np.uint64).reshape(r.nq, r.k)
        table = list(r.owner_names)
        flat_owners = [table[i] if 0 <= i < len(table) else "" for i in r.owners]
        owners = [flat_owners[i * r.k : (i + 1) * r.k] for i in range(r.nq)]
        dist = np.frombuffer(r.distances, "<f4").astype(np.float32).reshape(r.nq, r.k)
        docs = None
        if with_documents:
            flat = [convert.decode_document(d) for d in r.documents]
            docs = [flat[i * r.k : (i + 1) * r.k] for i in range(r.nq)]
        vecs = None
        if with_vectors:
            vecs = convert.decode_matrix(r.vectors).reshape(r.nq, r.k, -1)
        return SearchResult(ids, dist, docs, vecs, r.seq, owners)


def _info(c: pb.CollectionInfo) -> dict[str, Any]:
    return {
        "name": c.name,
        "dim": c.dim,
        "metric": convert.METRIC_NAMES.get(c.metric, "l2"),
        "vectors": c.vector_count,
        "tenants": c.tenant_count,
        "trained": c.trained,
        "seq": c.seq,
        "memory": dict(c.memory_bytes),
        "quarantined": c.quarantined,
        "index": {
            f: getattr(c.index, f)
            for f in ("branching", "max_leaf_size", "max_sl_size", "train_min_vectors")
        },
    }
