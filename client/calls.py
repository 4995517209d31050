"""Every SDK call once, as a plan: a generator that yields the RPCs to make (`Call`) and
receives their responses, then returns the typed result. `Client` runs plans with blocking
gRPC, `AsyncClient` awaits them on grpc.aio, so the two cannot drift apart. Conversions are
curator_api.convert's; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from tqdm import tqdm

from curator import errors
from curator.config import IndexConfig, Metric, SearchParams
from curator.predicate import Predicate
from curator.results import (
    CollectionInfo,
    Document,
    IdPage,
    IssuedKey,
    KeyInfo,
    Records,
    SearchResult,
    ServerInfo,
    WriteResult,
)
from curator.validation import as_ids
from curator_api import cluster_wire, convert
from curator_api.predicates import predicate_to_pb
from curator_api.v1 import curator_pb2 as pb

__all__ = ["Call", "Plan", "error_from", "service_config"]

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One RPC: service ("Admin", "Vectors", "Cache"), method name, request, deadline."""

    service: str
    method: str
    request: Any
    timeout: float | None = None


Plan = Generator[Call, Any, T]

# The status code of each error class is its `code` (as the server maps them), so the same
# mistake raises the same class in-process and over the wire.
_ERRORS: dict[grpc.StatusCode, type[errors.CuratorError]] = {
    grpc.StatusCode[cls.code]: cls for cls in errors.CuratorError.__subclasses__()
}


def error_from(e: grpc.RpcError) -> Exception:
    """The curator.errors class of a failed call (the RpcError itself for other codes);
    TenantMoved / TenantMoving when a cluster node names the tenant's home."""
    if e.code() == grpc.StatusCode.UNAVAILABLE:
        trailing = getattr(e, "trailing_metadata", None)
        moved = cluster_wire.moved_error(e.details() or "", trailing() if trailing else ())
        if moved is not None:
            return moved
    cls = _ERRORS.get(e.code())
    return e if cls is None else cls(e.details())


def service_config(retries: int) -> str:
    """gRPC retries UNAVAILABLE with exponential backoff; nothing else is retried."""
    policy = {
        "maxAttempts": max(2, retries + 1),
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": f"curator.v1.{s}"} for s in ("Admin", "Vectors", "Cache")]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def _ids(ids: Any) -> list[int]:
    return as_ids(ids, unique=False).tolist()  # negatives, floats, 2**64-1: InvalidArgument


def _pages(service: str, method: str, request_type: Any, field: str, **kw: Any) -> Plan[list[Any]]:
    out: list[Any] = []
    token = ""
    while True:
        r = yield Call(service, method, request_type(page_token=token, **kw))
        out.extend(getattr(r, field))
        token = r.next_page_token
        if not token:
            return out


# -- administration ------------------------------------------------------------------------
def create_collection(
    name: str, dim: int, metric: str | Metric, config: IndexConfig | None
) -> Plan[CollectionInfo]:
    req = pb.CreateCollectionRequest(
        name=name,
        dim=dim,
        metric=convert.metric_to_pb(Metric.parse(metric).value),
        index=convert.index_config_to_pb(config or IndexConfig()),
    )
    return convert.collection_info_from_pb((yield Call("Admin", "CreateCollection", req)))


def list_collections() -> Plan[list[str]]:
    infos = yield from _pages("Admin", "ListCollections", pb.ListRequest, "collections")
    return [c.name for c in infos]


def describe_collection(name: str) -> Plan[CollectionInfo]:
    r = yield Call("Admin", "DescribeCollection", pb.CollectionRef(name=name))
    return convert.collection_info_from_pb(r)


def drop_collection(name: str) -> Plan[None]:
    yield Call("Admin", "DropCollection", pb.CollectionRef(name=name))


def create_tenant(name: str, group: str = "") -> Plan[None]:
    yield Call("Admin", "CreateTenant", pb.TenantRef(name=name, group=group))


def placement() -> Plan[Any]:
    """(nodes, placements, read sets) of a cluster (FailedPrecondition on a single server)."""
    return cluster_wire.placement_from_pb((yield Call("Admin", "GetPlacement", pb.Empty())))


def move_tenant(
    tenant: str,
    to_node: str = "",
    *,
    resume: bool = False,
    abort: bool = False,
    timeout: float = 3600.0,
) -> Plan[dict[str, Any]]:
    """Cluster mode: move `tenant` to node `to_node` live (or resume / abort its recorded
    move); the report (phases' seconds, vectors copied, write pause, fence seq). Returns
    when the move is done (or aborted)."""
    req = pb.MoveTenantRequest(tenant=tenant, to_node=to_node, resume=resume, abort=abort)
    r = yield Call("Admin", "MoveTenant", req, timeout)
    return {
        "tenant": r.tenant,
        "source": r.source,
        "target": r.target,
        "phase": r.phase,
        "epoch": r.epoch,
        "base_seq": r.base_seq,
        "fence_seq": r.fence_seq,
        "rounds": r.rounds,
        "pause_s": r.pause_seconds,
        "seconds": dict(r.seconds),
        "vectors": r.vectors,
    }


def list_tenants() -> Plan[list[str]]:
    names = yield from _pages("Admin", "ListTenants", pb.ListRequest, "tenants")
    return [str(n) for n in names]


def drop_tenant(name: str) -> Plan[None]:
    yield Call("Admin", "DropTenant", pb.TenantRef(name=name))


def allow_sharing(tenant: str, with_tenant: str, allowed: bool) -> Plan[None]:
    req = pb.AllowSharingRequest(tenant=tenant, with_tenant=with_tenant, allowed=allowed)
    yield Call("Admin", "AllowSharing", req)


def train(name: str) -> Plan[bool]:
    return bool((yield Call("Admin", "Train", pb.CollectionRef(name=name))).trained)


def issue_key(tenant: str | None, description: str) -> Plan[IssuedKey]:
    req = pb.IssueKeyRequest(tenant=tenant or "", description=description, admin=tenant is None)
    return convert.issued_key_from_pb((yield Call("Admin", "IssueKey", req)))


def list_keys(tenant: str | None) -> Plan[list[KeyInfo]]:
    keys = yield from _pages("Admin", "ListKeys", pb.ListKeysRequest, "keys", tenant=tenant or "")
    return [convert.key_info_from_pb(k) for k in keys]


def revoke_key(key_id: str) -> Plan[None]:
    yield Call("Admin", "RevokeKey", pb.RevokeKeyRequest(key_id=key_id))


def rotate_key(key_id: str) -> Plan[IssuedKey]:
    r = yield Call("Admin", "RotateKey", pb.RotateKeyRequest(key_id=key_id))
    return convert.issued_key_from_pb(r)


def backup(name: str) -> Plan[str]:
    return str((yield Call("Admin", "Backup", pb.BackupRequest(name=name))).path)


def server_info() -> Plan[ServerInfo]:
    return convert.server_info_from_pb((yield Call("Admin", "ServerInfo", pb.Empty())))


# -- vectors -------------------------------------------------------------------------------
def upsert(
    collection: str,
    ids: Any,
    vectors: Any,
    documents: Sequence[Document] | None,
    tenant: str | None,
    batch_size: int | None,
    progress: bool,
    max_message_bytes: int,
) -> Plan[WriteResult]:
    """Large inputs go in batches (each one atomic); the result carries the last batch's seq
    and the total count."""
    ids = np.asarray(ids, np.uint64).reshape(-1)
    x = convert.as_rows(vectors)
    if x.ndim != 2 or len(x) != len(ids):
        raise errors.InvalidArgument(f"expected vectors of shape ({len(ids)}, d), got {x.shape}")
    if documents is not None and len(documents) != len(ids):
        raise errors.InvalidArgument(
            f"expected one document per id, got {len(documents)} documents for {len(ids)} ids"
        )
    if batch_size is None:  # keep each request well under the message limit
        batch_size = max(1, min(10_000, max_message_bytes // 4 // (4 * x.shape[1] + 64)))
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
        r = convert.write_result_from_pb((yield Call("Vectors", "Upsert", req)))
        seq, count, tseq = r.seq, count + r.count, r.tenant_seq
    return WriteResult(seq, count, tseq)


def get(collection: str, ids: Any, tenant: str | None, owner: str | None) -> Plan[Records]:
    req = pb.GetRequest(
        collection=collection, tenant=tenant or "", owner=owner or "", ids=_ids(ids)
    )
    return convert.records_from_pb((yield Call("Vectors", "Get", req)))


def delete(collection: str, ids: Any, tenant: str | None, owner: str | None) -> Plan[WriteResult]:
    req = pb.DeleteRequest(
        collection=collection, tenant=tenant or "", owner=owner or "", ids=_ids(ids)
    )
    return convert.write_result_from_pb((yield Call("Vectors", "Delete", req)))


def access(
    method: str,
    collection: str,
    ids: Any,
    to_tenant: str,
    tenant: str | None,
    owner: str | None,
) -> Plan[WriteResult]:
    """method: "Grant" or "Revoke"."""
    req = pb.AccessRequest(
        collection=collection,
        tenant=tenant or "",
        owner=owner or "",
        to_tenant=to_tenant,
        ids=_ids(ids),
    )
    return convert.write_result_from_pb((yield Call("Vectors", method, req)))


def count(collection: str, tenant: str | None) -> Plan[int]:
    req = pb.CountRequest(collection=collection, tenant=tenant or "")
    return int((yield Call("Vectors", "Count", req)).count)


def list_ids(
    collection: str,
    tenant: str | None,
    owner: str | None,
    after: int | None,
    limit: int,
) -> Plan[IdPage]:
    req = pb.ListIdsRequest(
        collection=collection, tenant=tenant or "", owner=owner or "", limit=limit
    )
    if after is not None:
        req.after = after
    r = yield Call("Vectors", "ListIds", req)
    return convert.id_page_from_pb(r)


def search(
    collection: str,
    queries: Any,
    k: int,
    tenant: str | Sequence[str] | None,
    params: SearchParams | None,
    with_documents: bool,
    with_vectors: bool,
    require_all: bool,
    timeout: float | None,
    where: Predicate | None = None,
    explain: bool = False,
) -> Plan[SearchResult]:
    req = pb.SearchRequest(
        collection=collection,
        tenants=[tenant] if isinstance(tenant, str) else list(tenant or []),
        queries=convert.encode_matrix(convert.as_rows(queries)),
        k=k,
        with_documents=with_documents,
        with_vectors=with_vectors,
        require_all=require_all,
        explain=explain,
    )
    if where is not None:
        req.where.CopyFrom(predicate_to_pb(where))
    if params is not None:
        req.params.CopyFrom(convert.search_params_to_pb(params))
    r = yield Call("Vectors", "Search", req, timeout)
    return convert.search_result_from_pb(r, with_documents)
