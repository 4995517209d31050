"""The gRPC servicers: decode, one call into the Database, encode. Authorisation rules (who
may act as which tenant) are applied here, before the call."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curator.auth import Principal
from curator.config import IndexConfig, SearchParams
from curator.database import Database
from curator.errors import InvalidArgument, NotFound, PermissionDenied
from curator.results import WriteResult
from curator_api import convert
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from server.auth import current_principal
from server.status import rpc

__all__ = ["AdminServicer", "CacheServicer", "VectorsServicer"]

VERSION = "0.1.0"
_MAX_PAGE = 1000
_NAME_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _admin() -> Principal:
    p = current_principal.get()
    if not p.is_admin:
        raise PermissionDenied(f"expected an admin key, got a key of {p}")
    return p


def _act_as(requested: str, required: bool) -> str | None:
    """The tenant a call acts for: a tenant key acts for itself only; the admin names one
    (or, where allowed, none: every tenant)."""
    p = current_principal.get()
    if not p.is_admin:
        if requested and requested != p.tenant:
            raise PermissionDenied("expected the key's own tenant, got another tenant")
        return p.tenant
    if not requested and required:
        raise InvalidArgument("expected a tenant to act as (the admin key acts for none)")
    return requested or None


def _page(items: Sequence[str], size: int, token: str) -> tuple[list[str], str]:
    size = min(size or 100, _MAX_PAGE)
    start = 0
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("expected a page_token from a previous response") from None
        start = (
            int(np.searchsorted(np.array(items, dtype=object), after, side="right")) if items else 0
        )
    page = list(items[start : start + size])
    more = start + size < len(items)
    return page, base64.urlsafe_b64encode(page[-1].encode()).decode() if more and page else ""


def _index_config(p: pb.IndexParams) -> IndexConfig:
    fields = {
        f: getattr(p, f)
        for f in ("branching", "max_leaf_size", "max_sl_size", "train_min_vectors")
        if getattr(p, f)
    }
    return IndexConfig(**fields)


def _search_params(p: pb.SearchParams) -> SearchParams | None:
    fields = {
        f: getattr(p, f)
        for f in ("search_ef", "beam_size", "variance_boost", "exact_search_threshold")
        if p.HasField(f)
    }
    return SearchParams(**fields) if fields else None


class _Base:
    def __init__(self, state: Any) -> None:
        self._state = state  # .db: Database, .started: float, .backup_dir: Path

    @property
    def db(self) -> Database:
        db: Database = self._state.db
        return db


class AdminServicer(_Base, pb_grpc.AdminServicer):
    def _info(self, name: str) -> pb.CollectionInfo:
        d = self.db.describe_collection(name)
        cfg = d["config"]
        info = pb.CollectionInfo(
            name=name,
            dim=d["dim"],
            metric=convert.metric_to_pb(d["metric"]),
            index=pb.IndexParams(
                **{
                    k: getattr(cfg, k)
                    for k in ("branching", "max_leaf_size", "max_sl_size", "train_min_vectors")
                }
            ),
        )
        p = current_principal.get()
        if p.is_admin:
            info.vector_count, info.tenant_count = d["vectors"], d["tenants"]
            info.trained, info.seq = d["trained"], d["seq"]
            info.memory_bytes.update(d["memory"])
            info.quarantined = d["quarantined"]
        else:  # a tenant learns only about its own vectors
            info.vector_count = self.db.count(name, tenant=p.tenant)
        return info

    @rpc
    def CreateCollection(self, request: pb.CreateCollectionRequest, context: Any) -> Any:
        _admin()
        self.db.create_collection(
            request.name,
            request.dim,
            convert.metric_from_pb(request.metric),
            _index_config(request.index),
        )
        return self._info(request.name)

    @rpc
    def ListCollections(self, request: pb.ListRequest, context: Any) -> Any:
        names, token = _page(self.db.list_collections(), request.page_size, request.page_token)
        return pb.ListCollectionsResponse(
            collections=[self._info(n) for n in names], next_page_token=token
        )

    @rpc
    def DescribeCollection(self, request: pb.CollectionRef, context: Any) -> Any:
        return self._info(request.name)

    @rpc
    def DropCollection(self, request: pb.CollectionRef, context: Any) -> Any:
        _admin()
        self.db.drop_collection(request.name)
        return pb.Empty()

    @rpc
    def Train(self, request: pb.CollectionRef, context: Any) -> Any:
        _admin()
        return pb.TrainResponse(trained=self.db.train(request.name))

    @rpc
    def CreateTenant(self, request: pb.TenantRef, context: Any) -> Any:
        _admin()
        self.db.create_tenant(request.name)
        return pb.Empty()

    @rpc
    def ListTenants(self, request: pb.ListRequest, context: Any) -> Any:
        _admin()
        names, token = _page(self.db.list_tenants(), request.page_size, request.page_token)
        return pb.ListTenantsResponse(tenants=names, next_page_token=token)

    @rpc
    def DropTenant(self, request: pb.TenantRef, context: Any) -> Any:
        _admin()
        self.db.drop_tenant(request.name)
        return pb.Empty()

    @rpc
    def AllowSharing(self, request: pb.AllowSharingRequest, context: Any) -> Any:
        _admin()
        self.db.allow_sharing(request.tenant, request.with_tenant, request.allowed)
        return pb.Empty()

    @rpc
    def IssueKey(self, request: pb.IssueKeyRequest, context: Any) -> Any:
        _admin()
        # a key is always for an existing tenant, checked under the writer lock (no race
        # with a drop)
        info, secret = self.db.issue_key(request.tenant, request.description)
        return pb.IssueKeyResponse(key_id=info.key_id, api_key=secret)

    @rpc
    def ListKeys(self, request: pb.ListKeysRequest, context: Any) -> Any:
        _admin()
        keys = {
            k.key_id: k
            for k in self.db.keys.list_keys()
            if k.tenant is not None and (not request.tenant or k.tenant == request.tenant)
        }
        ids, token = _page(sorted(keys), request.page_size, request.page_token)
        return pb.ListKeysResponse(
            keys=[
                pb.KeyInfo(
                    key_id=i,
                    tenant=keys[i].tenant or "",
                    description=keys[i].description,
                    created=keys[i].created,
                )
                for i in ids
            ],
            next_page_token=token,
        )

    @rpc
    def RevokeKey(self, request: pb.RevokeKeyRequest, context: Any) -> Any:
        _admin()
        self.db.keys.revoke(request.key_id)
        return pb.Empty()

    @rpc
    def Backup(self, request: pb.BackupRequest, context: Any) -> Any:
        _admin()
        if not request.name or set(request.name) - _NAME_SAFE or request.name.startswith("."):
            raise InvalidArgument(
                f"expected a backup name of letters, digits, '-', '_', '.', got {request.name!r}"
            )
        dest = Path(self._state.backup_dir) / request.name
        self.db.backup(dest)
        return pb.BackupResponse(path=str(dest))

    @rpc
    def ServerInfo(self, request: pb.Empty, context: Any) -> Any:
        p = current_principal.get()
        stats = self.db.stats()
        return pb.ServerInfoResponse(
            version=VERSION,
            principal=str(p),
            seq=stats["seq"] if p.is_admin else self.db.tenant_seq(p.tenant or ""),
            collections=stats["collections"],
            tenants=stats["tenants"] if p.is_admin else 0,
            uptime_seconds=time.monotonic() - self._state.started,
        )


class VectorsServicer(_Base, pb_grpc.VectorsServicer):
    @rpc
    def Upsert(self, request: pb.UpsertRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True)
        ids = np.array(request.ids, np.uint64)
        x = convert.decode_matrix(request.vectors, "vectors")
        docs = (
            [convert.decode_document(d) for d in request.documents]
            if len(request.documents)
            else None
        )
        res = self.db.upsert(request.collection, ids, x, docs, tenant=tenant or "")
        return _written(res)

    @rpc
    def Get(self, request: pb.GetRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        rec = self.db.get(
            request.collection,
            np.array(request.ids, np.uint64),
            tenant=tenant,
            owner=request.owner or None,
        )
        return pb.GetResponse(
            ids=rec.ids.tolist(),
            vectors=convert.encode_matrix(rec.vectors),
            documents=[convert.encode_document(d) for d in rec.documents],
            owners=rec.owners,
        )

    @rpc
    def Delete(self, request: pb.DeleteRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        res = self.db.delete(
            request.collection,
            np.array(request.ids, np.uint64),
            tenant=tenant,
            owner=request.owner or None,
        )
        return _written(res)

    @rpc
    def Grant(self, request: pb.AccessRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        res = self.db.grant(
            request.collection,
            np.array(request.ids, np.uint64),
            request.to_tenant,
            tenant=tenant,
            owner=request.owner or None,
        )
        return _written(res)

    @rpc
    def Revoke(self, request: pb.AccessRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        res = self.db.revoke(
            request.collection,
            np.array(request.ids, np.uint64),
            request.to_tenant,
            tenant=tenant,
            owner=request.owner or None,
        )
        return _written(res)

    @rpc
    def Count(self, request: pb.CountRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        return pb.CountResponse(count=self.db.count(request.collection, tenant=tenant))

    @rpc
    def Search(self, request: pb.SearchRequest, context: Any) -> Any:
        p = current_principal.get()
        tenants = list(request.tenants)
        if not p.is_admin:
            if any(t != p.tenant for t in tenants):
                raise PermissionDenied("expected to search the key's own tenant, got another")
            tenants = [p.tenant or ""]
        elif not tenants:
            raise InvalidArgument("expected tenants to search for (the admin key acts for none)")
        q = convert.decode_matrix(request.queries, "queries")
        res = self.db.search(
            request.collection,
            q,
            request.k,
            tenant=tenants,
            params=_search_params(request.params),
            with_documents=request.with_documents,
            with_vectors=request.with_vectors,
            require_all=request.require_all,
        )
        nq, k = res.ids.shape
        names = sorted({o for row in res.owners or [] for o in row if o})
        slot = {n: i for i, n in enumerate(names)}
        out = pb.SearchResponse(
            nq=nq,
            k=k,
            ids=res.ids.ravel().tolist(),
            seq=res.seq if p.is_admin else self.db.tenant_seq(p.tenant or ""),
            distances=res.distances.astype("<f4").tobytes(),
            owner_names=names,
            owners=[slot.get(o, -1) for row in res.owners or [] for o in row],
        )
        if res.documents is not None:
            out.documents.extend(convert.encode_document(d) for row in res.documents for d in row)
        if res.vectors is not None:
            out.vectors.CopyFrom(convert.encode_matrix(res.vectors.reshape(nq * k, -1)))
        return out


def _written(res: WriteResult) -> pb.WriteResponse:
    """A write's answer: a tenant key sees its own write counter, never the global seq."""
    p = current_principal.get()
    seq = res.seq if p.is_admin else res.tenant_seq
    return pb.WriteResponse(seq=seq, count=res.count, tenant_seq=res.tenant_seq)


class CacheServicer(_Base, pb_grpc.CacheServicer):
    """The semantic cache: same tenant rules as Vectors; load reports are admin-only (a
    model's load changes every tenant's policies)."""

    @rpc
    def Lookup(self, request: pb.CacheLookupRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        res = self.db.cache_lookup(
            request.prompt,
            convert.decode_vector(request.embedding) if request.embedding else None,
            tenant=tenant,
            model=request.model,
            fingerprint=request.fingerprint,
            category=request.category or None,
            wait_s=request.wait_s,
        )
        return convert.lookup_to_pb(res)

    @rpc
    def Store(self, request: pb.CacheStoreRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        res = self.db.cache_store(
            request.prompt,
            convert.decode_vector(request.embedding) if request.embedding else None,
            request.response,
            tenant=tenant,
            model=request.model,
            fingerprint=request.fingerprint,
            category=request.category or None,
            ttl_s=request.ttl_s if request.HasField("ttl_s") else None,
            latency_s=request.latency_s,
            tokens=request.tokens,
        )
        return convert.stored_to_pb(res)

    @rpc
    def Invalidate(self, request: pb.CacheInvalidateRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        n = self.db.cache_invalidate(
            tenant=tenant,
            **{
                f: getattr(request, f)
                for f in ("category", "model", "fingerprint")
                if request.HasField(f)
            },
        )
        return pb.CacheInvalidateResponse(removed=n)

    @rpc
    def SetPolicy(self, request: pb.SetCachePolicyRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        policy = self.db.cache_set_policy(
            request.category, tenant=tenant, **convert.policy_fields_from_pb(request.policy)
        )
        return convert.policy_to_pb(policy)

    @rpc
    def ResetPolicy(self, request: pb.ResetCachePolicyRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        self.db.cache_reset_policy(request.category, tenant=tenant)
        return pb.Empty()

    @rpc
    def GetPolicies(self, request: pb.GetCachePoliciesRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        return convert.policies_to_pb(self.db.cache_policies(tenant=tenant, model=request.model))

    @rpc
    def AddExamples(self, request: pb.AddCacheExamplesRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        x = convert.decode_matrix(request.embeddings, "embeddings")
        n = self.db.cache_add_examples(request.category, x, tenant=tenant)
        return pb.AddCacheExamplesResponse(count=n)

    @rpc
    def ReportLoad(self, request: pb.ReportLoadRequest, context: Any) -> Any:
        _admin()
        if request.HasField("capacity_rps"):
            self.db.cache_set_capacity(request.model, request.capacity_rps)
        if request.HasField("load"):
            state = self.db.cache_report_load(request.model, request.load)
        else:
            state = self.db.cache_stats()["models"].get(request.model)
            if state is None:
                raise NotFound(f"expected a model with a load or capacity, got {request.model!r}")
        return convert.model_load_to_pb(request.model, state)

    @rpc
    def Stats(self, request: pb.CacheStatsRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        return convert.cache_stats_to_pb(self.db.cache_stats(tenant=tenant))
