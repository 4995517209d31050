"""Cluster mode of a node: routing by placement, forwarding, and the registry kept local.

Every node holds a catalog record of every tenant (same global id, from etcd) and every
collection, so grants across nodes resolve; only a tenant's home node acknowledges its
writes. A call for a tenant homed elsewhere is forwarded to the home, unless the caller asked
for no forwarding (metadata ``x-curator-route: direct``, set by the SDK): then it fails with
TenantMoved naming the home, for the caller's own tenant only (a tenant key never learns where
another tenant lives; calls naming another owner are always forwarded).

API keys: a key issued on any node is published to etcd as its SHA-256 digest (never the
secret); every node authenticates from its own key ring first, then from the etcd cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, NamedTuple

import grpc

from curator.auth import Principal
from curator.cluster.contracts import BundleStore, NodeInfo, Placement
from curator.cluster.etcd_control import ROOT, EtcdControl
from curator.cluster.headroom import headroom
from curator.config import GRPC_RECONNECT_OPTIONS, IndexConfig
from curator.database import Database
from curator.errors import (
    AlreadyExists,
    CuratorError,
    FailedPrecondition,
    NotFound,
    TenantMoved,
    Unauthenticated,
    Unavailable,
)
from curator.results import IssuedKey
from curator.validation import check_name
from curator_api import cluster_wire
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from server.auth import current_principal
from server.cluster_metrics import FORWARDED, watch_cluster
from server.recovery import Recovery

__all__ = ["DIRECT", "ROUTE_HEADER", "ClusterNode", "is_direct"]

log = logging.getLogger(__name__)

ROUTE_HEADER = "x-curator-route"


class _Metadatum(NamedTuple):
    key: str
    value: str


#: The metadata entry of a direct call (as grpc hands invocation metadata to servicers).
DIRECT = _Metadatum(ROUTE_HEADER, "direct")
_AUTH_HEADERS = ("authorization", "x-api-key")
_FOLLOW = 8  # forwarding: redirects followed and TENANT_MOVING retries (~2.8 s of backoff)
_STUBS = {"Admin": pb_grpc.AdminStub, "Vectors": pb_grpc.VectorsStub, "Cache": pb_grpc.CacheStub}


def is_direct(context: Any) -> bool:
    return any(m.key == ROUTE_HEADER and m.value == "direct" for m in context.invocation_metadata())


class _Direct:
    """A servicer context that reads as a direct call (this node's part of a fan-out)."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def invocation_metadata(self) -> Any:
        return (*self._context.invocation_metadata(), DIRECT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class ClusterNode:
    """This node's view of the cluster. `control` is started; `attach(db)` once the local
    database is open (it then mirrors the registry and registers the node's lease)."""

    def __init__(
        self,
        control: EtcdControl,
        node_id: str,
        address: str,
        store: BundleStore | None = None,
        admin_key: str = "",
    ) -> None:
        self.control = control
        self.node_id = node_id
        self.address = address
        self.store = store  # where bundles of moves travel (None: moves refused)
        self.admin_key = admin_key  # the cluster's: the controller's calls to other nodes
        self.db: Database | None = None
        self.recovery: Recovery | None = None
        self._changes: queue.Queue[str] = queue.Queue()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}  # (address, service) -> stub
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(8, thread_name_prefix="curator-fanout")
        control.listen(self._on_change)

    # -- registry mirrored into the local catalog ------------------------------------------------
    def attach(self, db: Database) -> None:
        self.db = db
        self.control.raise_id_floor(max(db.catalog.ids(), default=0))
        for name in self.control.collections():
            self._apply(f"{ROOT}collections/{name}")
        for name in self.control.tenants():
            self._apply(f"{ROOT}tenants/{name}")
        self._refreeze(db)
        threading.Thread(target=self._apply_changes, daemon=True, name="cluster-sync").start()
        self.control.register(self._facts)
        self.recovery = Recovery(self, db)
        self.recovery.start()
        watch_cluster(self._metrics_state)

    def _refreeze(self, db: Database) -> None:
        """Freeze again, before serving, every tenant this node was handing over when it
        stopped (its placement here in `handoff`): the freeze lives in memory, and a driver
        that goes on with the move without resuming it ships no delta past the fence it
        holds, so a write acknowledged here now would be lost at the flip. The move unfreezes
        it (abort) or redirects it (mark moved), as before the restart."""
        for p in self.control.placements().values():
            if p.node != self.node_id or p.state != "handoff" or not db.has_tenant(p.tenant):
                continue
            try:
                db.freeze_tenant(p.tenant)
                log.warning("tenant %r frozen again: its move was in handoff", p.tenant)
            except CuratorError as e:  # moved away meanwhile: nothing to freeze
                log.warning("could not freeze %r again: %s", p.tenant, e)

    def _metrics_state(self) -> tuple[dict[str, int], bool]:
        per_node = {n: 0 for n in self.control.nodes()}
        for p in self.control.placements().values():
            per_node[p.node] = per_node.get(p.node, 0) + 1
        return per_node, self.recovery is not None and self.recovery.election.is_leader()

    def _facts(self) -> dict[str, Any]:
        """What the node record publishes besides the address: free bytes, in whole MiB
        (fewer etcd writes). Never raises: a failure must not cost the node its lease."""
        try:
            return {"headroom": headroom(self.db) >> 20 << 20} if self.db is not None else {}
        except Exception:
            log.warning("could not measure this node's free space", exc_info=True)
            return {}

    def headroom_of(self, node: str) -> int:
        """The free bytes `node` last published; FailedPrecondition if it published none."""
        room = self.control.node_facts(node).get("headroom")
        if not isinstance(room, int):
            raise FailedPrecondition(
                f"expected node {node} to publish its free space in etcd, got {room!r} (is it "
                "live, and of this release?)"
            )
        return room

    def _on_change(self, key: str, value: bytes | None) -> None:
        if key.startswith((f"{ROOT}tenants/", f"{ROOT}collections/", f"{ROOT}keys/")):
            self._changes.put(key)

    def _apply_changes(self) -> None:
        while True:
            key = self._changes.get()
            try:
                self._apply(key)
            except CuratorError as e:
                log.warning("could not mirror %s locally: %s", key, e)
            except Exception:
                log.exception("could not mirror %s locally", key)

    def _apply(self, key: str) -> None:
        if self.db is None:
            return
        kind, _, name = key[len(ROOT) :].partition("/")
        if kind == "tenants":
            self.ensure_tenant(name)
        elif kind == "collections":
            self._ensure_collection(name)
        elif kind == "keys" and self.control.key(name) is None:
            try:  # revoked on another node: the copy in this node's key ring goes too
                self.db.revoke_key(name[:12])  # a key id is its digest's first 12 digits
            except (NotFound, FailedPrecondition):
                pass

    def ensure_tenant(self, name: str) -> None:
        """Mirror the registry's record of `name` in the local catalog (create it with its
        global id, drop a stale record of another id, drop it if it was deleted)."""
        db = self.db
        if db is None:
            return
        reg = self.control.tenant(name)
        rec = db.catalog.get(name)
        if rec is not None and (reg is None or rec.id != reg[0]):
            try:
                db.drop_tenant(name)
            except NotFound:
                pass
        if reg is not None and not db.has_tenant(name):
            try:
                db.create_tenant(name, tenant_id=reg[0])
            except AlreadyExists:
                pass  # created meanwhile by another thread

    def _ensure_collection(self, name: str) -> None:
        db = self.db
        assert db is not None
        spec = self.control.collections().get(name)
        have = name in db.list_collections()
        if spec is None and have:
            try:
                db.drop_collection(name)
            except NotFound:
                pass  # dropped meanwhile by another thread
        elif spec is not None and not have:
            index = IndexConfig(**spec["index"])
            try:
                db.create_collection(name, spec["dim"], spec["metric"], index)
            except AlreadyExists:
                pass

    def create_collection(self, name: str, dim: int, metric: str, index: IndexConfig) -> None:
        """Validate here, publish to etcd (every node creates it), create it here at once."""
        name = check_name(name, "collection")
        if name in self.control.collections():
            raise AlreadyExists(f"expected a new collection name, got existing {name!r}")
        spec = {"dim": dim, "metric": metric, "index": dataclasses.asdict(index)}
        self.control.put_collection(name, spec)
        try:
            self._ensure_collection(name)
        except Exception:
            self.control.delete_collection(name)  # refused here: refused everywhere
            raise

    # -- tenants --------------------------------------------------------------------------------
    def choose_node(self, group: str) -> str:
        """The declared group's node, else the live node with the fewest tenants."""
        nodes = self.control.nodes()
        places = self.control.placements().values()
        if group:
            for p in places:
                if p.group == group and p.node in nodes:
                    return p.node
        load = {n: 0 for n in nodes}
        for p in places:
            if p.node in load:
                load[p.node] += 1
        if not load:
            raise Unavailable("expected at least one live node in the cluster, got none")
        return min(load, key=lambda n: (load[n], n))

    def create_tenant(self, name: str, group: str) -> Placement:
        name = check_name(name, "tenant")  # before etcd: a bad name must reach no node
        group = check_name(group, "group") if group else ""
        if self.db is not None and self.db.has_tenant(name) and self.control.tenant(name):
            raise AlreadyExists(f"expected a new tenant name, got existing {name!r}")
        p = self.control.create_tenant(name, self.choose_node(group), group)
        self.ensure_tenant(name)
        return p

    def before_grant(self, to_tenant: str) -> None:
        """A grant to a tenant homed elsewhere records the read set first: a stale entry
        costs an empty fan-out, a missing one would lose results (Unavailable without etcd,
        unless the entry exists already)."""
        self.ensure_tenant(to_tenant)
        p = self.placement(to_tenant)
        if p is not None and p.node != self.node_id:
            self.control.add_readset(to_tenant, self.node_id)

    def drop_tenant(self, name: str) -> None:
        """On the home: forget the tenant in etcd (its keys too), then here; every node then
        drops its record."""
        if self.db is None or not self.db.has_tenant(name):
            raise NotFound(f"expected a known tenant, got {name!r}")
        self.control.delete_tenant(name)
        self.ensure_tenant(name)

    def drop_collection(self, name: str) -> None:
        if self.db is None or name not in self.db.list_collections():
            raise NotFound(f"expected a known collection, got {name!r}")
        self.control.delete_collection(name)
        self._ensure_collection(name)

    # -- keys -----------------------------------------------------------------------------------
    def authenticate(self, db: Database, key: str | None) -> Principal:
        try:
            return db.keys.authenticate(key)
        except Unauthenticated:
            rec = self.control.key(hashlib.sha256((key or "").encode()).hexdigest())  # as KeyRing
            if not key or rec is None:
                raise
            return Principal(rec.get("tenant"), rec.get("key_id", ""))

    def publish_key(self, db: Database, issued: IssuedKey, tenant: str | None) -> IssuedKey:
        """Publish a key issued here; if etcd refuses, withdraw it (never half-issued)."""
        try:
            self.control.put_key(
                hashlib.sha256(issued.secret.encode()).hexdigest(),
                {"key_id": issued.key_id, "tenant": tenant},
            )
        except Unavailable:
            db.revoke_key(issued.key_id)
            raise
        return issued

    def revoke_key(self, db: Database, key_id: str) -> None:
        digests = self.control.key_digests(key_id)
        for d in digests:
            self.control.delete_key(d)
        try:
            db.revoke_key(key_id)
        except NotFound:
            if not digests:
                raise

    # -- routing --------------------------------------------------------------------------------
    def placement(self, tenant: str, fresh: bool = False) -> Placement | None:
        """From the cache; `fresh`: a tenant unknown here (created a moment ago on another
        node) is read from etcd and mirrored locally before the call goes on."""
        p = self.control.placement(tenant)
        db = self.db
        if fresh and (p is None or (db is not None and not db.has_tenant(tenant))):
            try:
                p = self.control.refresh_tenant(tenant)
            except Unavailable:
                return p  # etcd away: the cache is all there is
            self.ensure_tenant(tenant)
        return p

    def route(self, tenant: str | None, context: Any, reveal: bool) -> str | None:
        """None: serve `tenant` here. Otherwise the home's address to forward to. A direct
        call raises TenantMoved naming the home when `reveal` (the caller is that tenant or
        the admin); otherwise it is forwarded all the same."""
        # only for the caller's own tenant (or the admin): no etcd reads for made-up names
        p = self.placement(tenant, fresh=reveal) if tenant else None
        moved = self.db.moved_to(p.tenant) if p is not None and self.db is not None else None
        if p is not None and moved is not None and moved[1] > p.epoch:
            # this node handed the tenant over and its cache has not seen the flip yet
            p = dataclasses.replace(p, node=moved[0], epoch=moved[1])
        if p is None or p.node == self.node_id:
            return None
        node = self.control.nodes().get(p.node)
        address = node.address if node is not None else ""
        if reveal and is_direct(context):
            raise TenantMoved(
                f"expected a call to the home node {p.node} of tenant {tenant!r}, "
                f"got node {self.node_id}",
                tenant=tenant or "",
                node=p.node,
                epoch=p.epoch,
                address=address,
            )
        if not address:
            raise Unavailable(f"expected a live home node for the tenant, got {p.node} down")
        return address

    def search_nodes(self, tenants: list[str]) -> set[str]:
        """Nodes holding vectors these tenants may read: the home and read set of each."""
        out: set[str] = set()
        for t in tenants:  # tenants the principal may search: its own, or any for the admin
            p = self.placement(t, fresh=True)
            out.add(p.node if p is not None else self.node_id)
            out |= self.control.readset(t)
        return out

    def nodes_for(self, tenants: list[str], context: Any) -> list[str]:
        """The nodes to ask for these tenants' readable vectors: this one alone for a direct
        call (TenantMoved when it holds none of them), else home and read set of each."""
        nodes = self.search_nodes(tenants)
        if not is_direct(context):
            return sorted(nodes)
        if self.node_id not in nodes:
            for t in tenants:  # TENANT_MOVED for the first tenant not homed here
                self.route(t, context, reveal=True)
        return [self.node_id]

    def gather(
        self, nodes: list[str], method: str, request: Any, context: Any, here: Callable[..., Any]
    ) -> list[Any]:
        """The same Vectors call on every node in `nodes` in parallel, as direct calls (this
        node's part by `here(request, context)` with the caller's principal); pb responses.
        A node that fails fails the call with its status."""
        principal = current_principal.get()

        def part(node: str) -> Callable[[], Any]:
            if node == self.node_id:

                def local() -> Any:
                    token = current_principal.set(principal)  # another thread
                    try:
                        return here(request, _Direct(context))
                    finally:
                        current_principal.reset(token)

                return local
            address = self.address_of(node)  # Unavailable at once if the node is down
            return lambda: self.call(address, "Vectors", method, request, context)

        try:
            return self.fan_out([part(n) for n in nodes])
        except grpc.RpcError as e:
            context.abort(e.code(), f"a node of the call failed: {e.details()}")
            raise AssertionError("context.abort raises") from None

    def address_of(self, node: str) -> str:
        info: NodeInfo | None = self.control.nodes().get(node)
        if info is None:
            raise Unavailable(f"expected node {node} to be live, got no lease for it")
        return info.address

    def call(self, address: str, service: str, method: str, request: Any, context: Any) -> Any:
        """Make the same call on `address` with the caller's key, as a direct call (raises
        grpc.RpcError)."""
        md = [(m.key, m.value) for m in context.invocation_metadata() if m.key in _AUTH_HEADERS]
        md.append((ROUTE_HEADER, "direct"))
        left = context.time_remaining()
        stub = getattr(self._stub(address, service), method)
        return stub(request, metadata=md, timeout=left if left and left < 3600 else 30.0)

    def forward(self, address: str, service: str, method: str, request: Any, context: Any) -> Any:
        """`call`, whose error (and trailing metadata) becomes this call's. A home handing
        the tenant over (TENANT_MOVING) is asked again after a backoff, and a TENANT_MOVED
        answer is followed to the new home, a bounded number of times within the deadline:
        clients without the SDK ride through a move."""
        for attempt in range(_FOLLOW + 1):
            try:
                out = self.call(address, service, method, request, context)
                FORWARDED.labels(method, "OK").inc()
                return out
            except grpc.RpcError as e:
                moved = None
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    moved = cluster_wire.moved_error(e.details() or "", e.trailing_metadata())
                left = context.time_remaining()
                if moved is None or attempt == _FOLLOW or (left is not None and left < 1.0):
                    FORWARDED.labels(method, e.code().name).inc()
                    context.set_trailing_metadata(e.trailing_metadata() or ())
                    context.abort(e.code(), e.details())
                if isinstance(moved, TenantMoved) and moved.node:
                    address = moved.address or self.address_of(moved.node)
                else:
                    time.sleep(min(0.05 * 2**attempt, 0.5))
        raise AssertionError("unreachable: the last attempt aborts")

    def fan_out(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run `calls` in parallel; the first error is raised after all have finished."""
        return [f.result() for f in [self._pool.submit(c) for c in calls]]

    def _stub(self, address: str, service: str) -> Any:
        """The shared stub of `service` on `address` (building one costs 30-70 us: it makes a
        callable per method, which a forwarded call would pay every time)."""
        key = (address, service)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = _STUBS[service](self.channel(address))
        return stub

    def channel(self, address: str) -> grpc.Channel:
        """The shared channel to another node."""
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                opts = [("grpc.max_receive_message_length", 64 << 20), *GRPC_RECONNECT_OPTIONS]
                ch = self._channels[address] = grpc.insecure_channel(address, options=opts)
        return ch

    def close(self) -> None:
        if self.recovery is not None:
            self.recovery.close()  # hands the controller role over at once
        self.control.close()
        self._pool.shutdown(wait=False)
        with self._lock:
            for ch in self._channels.values():
                ch.close()
