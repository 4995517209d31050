"""The gRPC servicers: decode, one call into the Database, encode. Authorisation rules (who
may act as which tenant, server/rules.py) are applied before the call."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from curator.cluster.merge import merge_topk
from curator.database import Database
from curator.errors import FailedPrecondition
from curator.results import SearchResult, WriteResult
from curator_api import cache_wire, cluster_wire, convert
from curator_api.predicates import predicate_from_pb
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from server import moves, rules
from server.auth import current_principal
from server.cluster import ClusterNode
from server.status import rpc

__all__ = ["AdminServicer", "CacheServicer", "VectorsServicer"]


def _admin() -> None:
    rules.require_admin(current_principal.get())


def _act_as(requested: str, required: bool) -> str | None:
    return rules.acting_tenant(current_principal.get(), requested, required)


class _Base:
    _service = ""  # the gRPC service's name, for forwarding

    def __init__(self, state: Any) -> None:
        self._state = state  # .db: Database, .started: float

    @property
    def db(self) -> Database:
        db: Database = self._state.db
        return db

    @property
    def cluster(self) -> ClusterNode | None:
        c: ClusterNode | None = getattr(self._state, "cluster", None)
        return c

    def _routed(self, tenant: str | None, method: str, request: Any, context: Any) -> Any:
        """Cluster mode: the answer of `tenant`'s home node when it is not this one (None:
        serve here). Where the tenant lives is told only to the admin and to the tenant."""
        c = self.cluster
        if c is None or not tenant:
            return None
        p = current_principal.get()
        address = c.route(tenant, context, reveal=p.is_admin or p.tenant == tenant)
        if address is None:
            return None
        return c.forward(address, self._service, method, request, context)


class AdminServicer(_Base, pb_grpc.AdminServicer):
    _service = "Admin"

    def _info(self, name: str) -> pb.CollectionInfo:
        return convert.collection_info_to_pb(
            rules.collection_view(self.db, name, current_principal.get())
        )

    @rpc
    def CreateCollection(self, request: pb.CreateCollectionRequest, context: Any) -> Any:
        _admin()
        metric = convert.metric_from_pb(request.metric)
        index = convert.index_config_from_pb(request.index)
        if self.cluster is not None:  # every node creates it from the registry
            self.cluster.create_collection(request.name, request.dim, metric, index)
        else:
            self.db.create_collection(request.name, request.dim, metric, index)
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
        if self.cluster is not None:  # every node drops it
            self.cluster.drop_collection(request.name)
        else:
            self.db.drop_collection(request.name)
        return pb.Empty()

    @rpc
    def Train(self, request: pb.CollectionRef, context: Any) -> Any:
        _admin()
        return pb.TrainResponse(trained=self.db.train(request.name))

    @rpc
    def CreateTenant(self, request: pb.TenantRef, context: Any) -> Any:
        _admin()
        if self.cluster is not None:
            self.cluster.create_tenant(request.name, request.group)
        else:
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
        if (fwd := self._routed(request.name, "DropTenant", request, context)) is not None:
            return fwd
        if self.cluster is not None:  # every node drops its record
            self.cluster.drop_tenant(request.name)
        else:
            self.db.drop_tenant(request.name)
        return pb.Empty()

    @rpc
    def AllowSharing(self, request: pb.AllowSharingRequest, context: Any) -> Any:
        _admin()
        if (fwd := self._routed(request.tenant, "AllowSharing", request, context)) is not None:
            return fwd
        if self.cluster is not None:
            self.cluster.ensure_tenant(request.with_tenant)
        self.db.allow_sharing(request.tenant, request.with_tenant, request.allowed)
        return pb.Empty()

    @rpc
    def IssueKey(self, request: pb.IssueKeyRequest, context: Any) -> Any:
        p = current_principal.get()
        key = rules.issue_key(self.db, p, request.tenant, request.admin, request.description)
        if self.cluster is not None:  # usable on every node
            key = self.cluster.publish_key(self.db, key, None if request.admin else request.tenant)
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
        if self.cluster is not None:
            self.cluster.revoke_key(self.db, request.key_id)
        else:
            self.db.revoke_key(request.key_id)
        return pb.Empty()

    @rpc
    def RotateKey(self, request: pb.RotateKeyRequest, context: Any) -> Any:
        p = current_principal.get()
        if self.cluster is not None:
            raise FailedPrecondition(
                "expected a single server for RotateKey, got cluster mode (issue a new key, "
                "then revoke the old one)"
            )
        key = rules.rotate_key(self.db, p, request.key_id)
        return convert.issued_key_to_pb(key)

    @rpc
    def Backup(self, request: pb.BackupRequest, context: Any) -> Any:
        _admin()
        return pb.BackupResponse(path=self.db.backup(request.name))

    @rpc
    def ServerInfo(self, request: pb.Empty, context: Any) -> Any:
        info = rules.server_info(self.db, current_principal.get(), self._state.started)
        return convert.server_info_to_pb(info)

    @rpc
    def GetPlacement(self, request: pb.Empty, context: Any) -> Any:
        c = self.cluster
        if c is None:
            raise FailedPrecondition("expected a node in cluster mode, got a single server")
        p = current_principal.get()
        places = c.control.placements()
        if not p.is_admin:  # a tenant learns where it lives, nothing about the others
            places = {t: v for t, v in places.items() if t == p.tenant}
        readsets = {t: c.control.readset(t) for t in places}
        nodes = c.control.nodes()
        return cluster_wire.placement_to_pb(c.node_id, nodes, list(places.values()), readsets)

    @rpc
    def MoveTenant(self, request: pb.MoveTenantRequest, context: Any) -> Any:
        _admin()
        c = self.cluster
        if c is None:
            raise FailedPrecondition("expected a node in cluster mode, got a single server")
        report, counts = moves.move_tenant(c, self.db, request, context)
        return moves.report_to_pb(report, counts)


class VectorsServicer(_Base, pb_grpc.VectorsServicer):
    _service = "Vectors"

    @rpc
    def Upsert(self, request: pb.UpsertRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True)
        if (fwd := self._routed(tenant, "Upsert", request, context)) is not None:
            return fwd
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
        if (fwd := self._routed(request.owner or tenant, "Get", request, context)) is not None:
            return fwd
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
        if (fwd := self._routed(request.owner or tenant, "Delete", request, context)) is not None:
            return fwd
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
        if (fwd := self._routed(request.owner or tenant, "Grant", request, context)) is not None:
            return fwd
        if self.cluster is not None:  # the grantee's read set, before the grant commits
            self.cluster.before_grant(request.to_tenant)
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
        if (fwd := self._routed(request.owner or tenant, "Revoke", request, context)) is not None:
            return fwd
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
        c = self.cluster
        if c is not None and tenant:  # vectors it may read live on its home and read set
            nodes = c.nodes_for([tenant], context)
            if nodes != [c.node_id]:
                parts = c.gather(nodes, "Count", request, context, self.Count)
                return pb.CountResponse(count=sum(p.count for p in parts))
        return pb.CountResponse(count=self.db.count(request.collection, tenant=tenant))

    @rpc
    def ListIds(self, request: pb.ListIdsRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        if (fwd := self._routed(request.owner or tenant, "ListIds", request, context)) is not None:
            return fwd
        page = self.db.list_ids(
            request.collection,
            tenant=tenant,
            owner=request.owner or None,
            after=request.after if request.HasField("after") else None,
            limit=request.limit or 1000,
        )
        return convert.id_page_to_pb(page)

    @rpc
    def Search(self, request: pb.SearchRequest, context: Any) -> Any:
        p = current_principal.get()
        tenants = rules.search_tenants(p, request.tenants)
        c = self.cluster
        if c is not None:
            nodes = c.nodes_for(tenants, context)
            if nodes != [c.node_id]:
                parts = c.gather(nodes, "Search", request, context, self.Search)
                merged = merge_topk(
                    [convert.search_result_from_pb(r, request.with_documents) for r in parts],
                    request.k,
                )
                return convert.search_result_to_pb(merged)
        return convert.search_result_to_pb(self._search_here(request, tenants))

    def _search_here(self, request: pb.SearchRequest, tenants: list[str]) -> SearchResult:
        p = current_principal.get()
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
        return res


def _written(res: WriteResult) -> pb.WriteResponse:
    """A write's answer: a tenant key sees its own write counter, never the global seq."""
    if not current_principal.get().is_admin:
        res = dataclasses.replace(res, seq=res.tenant_seq)
    return convert.write_result_to_pb(res)


class CacheServicer(_Base, pb_grpc.CacheServicer):
    """The semantic cache: same tenant rules as Vectors; load reports are admin-only (a
    model's load changes every tenant's policies)."""

    _service = "Cache"

    @rpc
    def Lookup(self, request: pb.CacheLookupRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        if (fwd := self._routed(tenant, "Lookup", request, context)) is not None:
            return fwd
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
        return cache_wire.lookup_to_pb(res)

    @rpc
    def Feedback(self, request: pb.CacheFeedbackRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        if (fwd := self._routed(tenant, "Feedback", request, context)) is not None:
            return fwd
        res = self.db.cache_feedback(
            tenant=tenant,
            lookup_id=request.lookup_id,
            entry_id=request.entry_id,
            correct=request.correct,
        )
        return cache_wire.feedback_to_pb(res)

    @rpc
    def Store(self, request: pb.CacheStoreRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        if (fwd := self._routed(tenant, "Store", request, context)) is not None:
            return fwd
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
        return cache_wire.stored_to_pb(res)

    @rpc
    def Invalidate(self, request: pb.CacheInvalidateRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        if (fwd := self._routed(tenant, "Invalidate", request, context)) is not None:
            return fwd
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
        if (fwd := self._routed(tenant, "SetPolicy", request, context)) is not None:
            return fwd
        policy = self.db.cache_set_policy(
            request.category, tenant=tenant, **cache_wire.policy_fields_from_pb(request.policy)
        )
        return cache_wire.policy_to_pb(policy)

    @rpc
    def ResetPolicy(self, request: pb.ResetCachePolicyRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        if (fwd := self._routed(tenant, "ResetPolicy", request, context)) is not None:
            return fwd
        reset = self.db.cache_reset_policy(request.category, tenant=tenant)
        return pb.ResetCachePolicyResponse(reset=reset)

    @rpc
    def GetPolicies(self, request: pb.GetCachePoliciesRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)  # admin, none: the defaults
        if (fwd := self._routed(tenant, "GetPolicies", request, context)) is not None:
            return fwd
        return cache_wire.policies_to_pb(self.db.cache_policies(tenant=tenant, model=request.model))

    @rpc
    def AddExamples(self, request: pb.AddCacheExamplesRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=True) or ""
        if (fwd := self._routed(tenant, "AddExamples", request, context)) is not None:
            return fwd
        x = convert.decode_matrix(request.embeddings, "embeddings")
        n = self.db.cache_add_examples(request.category, x, tenant=tenant)
        return pb.AddCacheExamplesResponse(count=n)

    @rpc
    def ReportLoad(self, request: pb.ReportLoadRequest, context: Any) -> Any:
        state = rules.report_load(
            self.db,
            current_principal.get(),
            request.model,
            request.load if request.HasField("load") else None,
            request.capacity_rps if request.HasField("capacity_rps") else None,
        )
        return cache_wire.model_load_to_pb(request.model, state)

    @rpc
    def Stats(self, request: pb.CacheStatsRequest, context: Any) -> Any:
        tenant = _act_as(request.tenant, required=False)
        if (fwd := self._routed(tenant, "Stats", request, context)) is not None:
            return fwd
        return cache_wire.cache_stats_to_pb(self.db.cache_stats(tenant=tenant))
