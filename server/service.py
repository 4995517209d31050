"""The gRPC servicers: decode, one call into the Database, encode. Authorisation rules (who
may act as which tenant, server/rules.py) are applied before the call."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from curator.database import Database
from curator.errors import NotFound
from curator.results import WriteResult
from curator_api import convert
from curator_api.predicates import predicate_from_pb
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from server import rules
from server.auth import current_principal
from server.status import rpc

__all__ = ["AdminServicer", "CacheServicer", "VectorsServicer"]


def _admin() -> None:
    rules.require_admin(current_principal.get())


def _act_as(requested: str, required: bool) -> str | None:
    return rules.acting_tenant(current_principal.get(), requested, required)


class _Base:
    def __init__(self, state: Any) -> None:
        self._state = state  # .db: Database, .started: float

    @property
    def db(self) -> Database:
        db: Database = self._state.db
        return db


class AdminServicer(_Base, pb_grpc.AdminServicer):
    def _info(self, name: str) -> pb.CollectionInfo:
        return convert.collection_info_to_pb(
            rules.collection_view(self.db, name, current_principal.get())
        )

    @rpc
    def CreateCollection(self, request: pb.CreateCollectionRequest, context: Any) -> Any:
        _admin()
        self.db.create_collection(
            request.name,
            request.dim,
            convert.metric_from_pb(request.metric),
            convert.index_config_from_pb(request.index),
        )
        return self._info(request.name)

    @rpc
    def ListCollections(self, request: pb.ListRequest, context: Any) -> Any:
        names, token = rules.page(self.db.list_collections(), request.page_size, request.page_token)
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
        names, token = rules.page(self.db.list_tenants(), request.page_size, request.page_token)
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
        p = current_principal.get()
        key = rules.issue_key(self.db, p, request.tenant, request.admin, request.description)
        return convert.issued_key_to_pb(key)

    @rpc
    def ListKeys(self, request: pb.ListKeysRequest, context: Any) -> Any:
        _admin()
        keys = {k.key_id: k for k in self.db.list_keys(request.tenant or None)}
        ids, token = rules.page(sorted(keys), request.page_size, request.page_token)
        return pb.ListKeysResponse(
            keys=[convert.key_info_to_pb(keys[i]) for i in ids], next_page_token=token
        )

    @rpc
    def RevokeKey(self, request: pb.RevokeKeyRequest, context: Any) -> Any:
        _admin()
        self.db.revoke_key(request.key_id)
        return pb.Empty()

    @rpc
    def RotateKey(self, request: pb.RotateKeyRequest, context: Any) -> Any:
        key = rules.rotate_key(self.db, current_principal.get(), request.key_id)
        return convert.issued_key_to_pb(key)

    @rpc
    def Backup(self, request: pb.BackupRequest, context: Any) -> Any:
        _admin()
        return pb.BackupResponse(path=self.db.backup(request.name))

    @rpc
    def ServerInfo(self, request: pb.Empty, context: Any) -> Any:
        info = rules.server_info(self.db, current_principal.get(), self._state.started)
        return convert.server_info_to_pb(info)


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
        res = self.db.upsert(request.collection, ids, x, docs, tenant=tenant)
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
        return convert.records_to_pb(rec)

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
    def ListIds(self, request: pb.ListIdsRequest, context: Any) -> Any:
        page = self.db.list_ids(
            request.collection,
            tenant=_act_as(request.tenant, required=False),
            owner=request.owner or None,
            after=request.after if request.HasField("after") else None,
            limit=request.limit or 1000,
        )
        return convert.id_page_to_pb(page)

    @rpc
    def Search(self, request: pb.SearchRequest, context: Any) -> Any:
        p = current_principal.get()
        tenants = rules.search_tenants(p, request.tenants)
        q = convert.decode_matrix(request.queries, "queries")
        res = self.db.search(
            request.collection,
            q,
            request.k,
            tenant=tenants,
            params=convert.search_params_from_pb(request.params),
            with_documents=request.with_documents,
            with_vectors=request.with_vectors,
            require_all=request.require_all,
            where=predicate_from_pb(request.where) if request.HasField("where") else None,
            explain=request.explain,
        )
        if not p.is_admin:  # a tenant key sees its own write counter, not the global seq
            res = dataclasses.replace(res, seq=self.db.tenant_seq(p.tenant or ""))
        return convert.search_result_to_pb(res)


def _written(res: WriteResult) -> pb.WriteResponse:
    """A write's answer: a tenant key sees its own write counter, never the global seq."""
    if not current_principal.get().is_admin:
        res = dataclasses.replace(res, seq=res.tenant_seq)
    return convert.write_result_to_pb(res)


class CacheServicer(_Base, pb_grpc.CacheServicer):
    """The semantic cache: same tenant rules as Vectors; load reports are admin-only (a
    model's load changes every tenant's policies)."""

    @rpc
    def Lookup(self, request: pb.CacheLookupRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        wait_s = request.wait_s
        left = context.time_remaining()
        if left is not None and 0 < wait_s <= 600:  # never wait past the caller's deadline
            wait_s = max(0.0, min(wait_s, left))
        res = self.db.cache_lookup(
            request.prompt,
            convert.decode_vector(request.embedding) if request.embedding else None,
            tenant=tenant,
            model=request.model,
            fingerprint=request.fingerprint,
            category=request.category or None,
            wait_s=wait_s,
            active=context.is_active,  # a cancelled call stops waiting
        )
        return convert.lookup_to_pb(res)

    @rpc
    def Feedback(self, request: pb.CacheFeedbackRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        res = self.db.cache_feedback(
            tenant=tenant,
            lookup_id=request.lookup_id,
            entry_id=request.entry_id,
            correct=request.correct,
        )
        return convert.feedback_to_pb(res)

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
        reset = self.db.cache_reset_policy(request.category, tenant=tenant)
        return pb.ResetCachePolicyResponse(reset=reset)

    @rpc
    def GetPolicies(self, request: pb.GetCachePoliciesRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)  # admin, none: the defaults
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
        state = (
            self.db.cache_report_load(request.model, request.load)
            if request.HasField("load")
            else self.db.cache_stats().models.get(request.model)
        )
        if state is None:
            raise NotFound(f"expected a model with a load or capacity, got {request.model!r}")
        return convert.model_load_to_pb(request.model, state)

    @rpc
    def Stats(self, request: pb.CacheStatsRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        return convert.cache_stats_to_pb(self.db.cache_stats(tenant=tenant))
