"""ClusterClient: the SDK for a Curator DB cluster; calls go straight to each tenant's home.

>>> from client.cluster import ClusterClient
>>> with ClusterClient(["127.0.0.1:50061"], api_key="cdb_...") as db:   # doctest: +SKIP
...     db.upsert("docs", ids, vectors)                 # on the key's tenant's home node
...     hits = db.search("docs", queries, k=10)         # home + nodes it was granted on

Keeps a placement cache (GetPlacement: nodes, each tenant's home and read set; reloaded
when older than `placement_ttl` before a search or count, so a grant made across nodes by
another client reaches this client's searches within that time). A call for
one tenant goes to its home with `x-curator-route: direct`; a node that is no longer home
answers TENANT_MOVED (or TENANT_MOVING during a handoff), and the client refreshes its cache
and retries a bounded number of times with backoff (a redirect to an epoch older than the
cached one is ignored, so two stale nodes cannot bounce it). A search fans out in parallel to
every node holding vectors the tenants may read and merges top-k by distance (ties by owner,
then id). A node that fails fails the search with Unavailable within the deadline, unless
`allow_partial=True`: then the answer covers the nodes that replied and `last_coverage`
says how many of how many.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, TypeVar

from client import calls
from client.client import Client
from curator.cluster.contracts import NodeInfo, Placement
from curator.cluster.merge import merge_topk
from curator.config import IndexConfig, Metric, SearchParams
from curator.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    TenantMoved,
    TenantMoving,
    Unavailable,
)
from curator.predicate import Predicate
from curator.results import (
    CollectionInfo,
    Document,
    IdPage,
    IssuedKey,
    Records,
    SearchResult,
    WriteResult,
)

__all__ = ["ClusterClient"]

T = TypeVar("T")
ROUTE = ("x-curator-route", "direct")


class ClusterClient:
    """seeds: "host:port" of one or more nodes; api_key: an admin or tenant key (valid on
    every node); timeout: each call's deadline; max_redirects: retries after TENANT_MOVED /
    TENANT_MOVING; retries: gRPC's own retries of a failed connection (keep it low: a node
    that is down must fail a call within the deadline)."""

    def __init__(
        self,
        seeds: str | Sequence[str],
        api_key: str,
        *,
        timeout: float = 30.0,
        max_redirects: int = 4,
        retries: int = 1,
        placement_ttl: float = 2.0,
    ) -> None:
        self._seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        if not self._seeds:
            raise Unavailable("expected at least one node address, got none")
        self._key = api_key
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.placement_ttl = placement_ttl
        self._loaded_at = 0.0
        self._retries = retries
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(8, thread_name_prefix="curator-cluster")
        self.nodes: dict[str, NodeInfo] = {}
        self.placements: dict[str, Placement] = {}
        self.readsets: dict[str, set[str]] = {}
        self.last_coverage: tuple[int, int] = (0, 0)
        self.refresh()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- placement cache ------------------------------------------------------------------------
    def _client(self, address: str) -> Client:
        with self._lock:
            c = self._clients.get(address)
            if c is None:
                c = self._clients[address] = Client(
                    address,
                    self._key,
                    timeout=self.timeout,
                    retries=self._retries,
                    metadata=(ROUTE,),
                )
            return c

    def refresh(self) -> None:
        """Reload nodes, placements and read sets from the first node that answers."""
        last: Exception | None = None
        known = [n.address for n in self.nodes.values()]
        for address in dict.fromkeys([*known, *self._seeds]):
            try:
                nodes, places, readsets = self._client(address)._run(calls.placement())
            except (Unavailable, FailedPrecondition) as e:
                last = e
                continue
            with self._lock:
                self.nodes, self.placements, self.readsets = nodes, places, readsets
                self._loaded_at = time.monotonic()
            return
        raise Unavailable(f"expected a reachable cluster node, got {last}")

    def _own_tenant(self) -> str:
        """A tenant key's tenant: the one placement it may see."""
        if len(self.placements) != 1:
            raise Unavailable("expected the key's tenant in the placement, got none; name it")
        return next(iter(self.placements))

    def _home(self, tenant: str | None) -> str:
        """The address of the tenant's home (None: the key's tenant; for the admin, which
        acts for no tenant, any node)."""
        name = tenant or (next(iter(self.placements)) if len(self.placements) == 1 else "")
        if not name:
            return self._home_any()
        p = self.placements.get(name)
        if p is None:
            self.refresh()
            p = self.placements.get(name)
        node = self.nodes.get(p.node) if p is not None else None
        if node is None:  # unknown tenant, or its home is down: any node answers that
            return next(iter(self.nodes.values())).address if self.nodes else self._seeds[0]
        return node.address

    def _moved(self, e: Unavailable, tried: set[tuple[str, int]]) -> None:
        """Update the cache after a redirect; backs off while a tenant is handed over."""
        if isinstance(e, TenantMoved) and e.node:
            cached = self.placements.get(e.tenant)
            if (e.node, e.epoch) not in tried and (cached is None or e.epoch >= cached.epoch):
                tried.add((e.node, e.epoch))
                if e.address and e.node not in self.nodes:
                    self.nodes[e.node] = NodeInfo(e.node, e.address)
                base = cached or Placement(e.tenant, 0, e.node, e.epoch)
                self.placements[e.tenant] = Placement(
                    e.tenant, base.tenant_id, e.node, e.epoch, "serving", base.group
                )
                return
        time.sleep(min(0.05 * 2 ** len(tried), 1.0))
        tried.add(("", len(tried)))
        self.refresh()

    def _redirected(self, attempt: Callable[[], T]) -> T:
        """Run `attempt` (which reads the placement cache afresh each time), following
        TENANT_MOVED / TENANT_MOVING up to max_redirects times."""
        tried: set[tuple[str, int]] = set()
        for n in range(self.max_redirects + 1):
            try:
                return attempt()
            except (TenantMoved, TenantMoving) as e:
                if n == self.max_redirects:
                    raise
                self._moved(e, tried)
        raise AssertionError("unreachable")

    def _routed(self, tenant: str | None, fn: Callable[[Client], T]) -> T:
        return self._redirected(lambda: fn(self._client(self._home(tenant))))

    def _any(self) -> Client:
        return self._client(self._home_any())

    def _home_any(self) -> str:
        return next(iter(self.nodes.values())).address if self.nodes else self._seeds[0]

    # -- administration: any node does it for the cluster ---------------------------------------
    def create_collection(
        self, name: str, dim: int, metric: str | Metric = "l2", index: IndexConfig | None = None
    ) -> CollectionInfo:
        return self._any().create_collection(name, dim, metric, index)

    def list_collections(self) -> list[str]:
        return self._any().list_collections()

    def describe_collection(self, name: str) -> CollectionInfo:
        return self._any().describe_collection(name)

    def create_tenant(self, name: str, group: str = "") -> None:
        """Register the tenant and place it (the group's node, else the least-loaded one)."""
        self._any()._run(calls.create_tenant(name, group))
        self.refresh()

    def list_tenants(self) -> list[str]:
        return self._any().list_tenants()

    def drop_tenant(self, name: str) -> None:
        self._routed(name, lambda c: c.drop_tenant(name))
        self.refresh()

    def allow_sharing(self, tenant: str, with_tenant: str, allowed: bool = True) -> None:
        self._routed(tenant, lambda c: c.allow_sharing(tenant, with_tenant, allowed))

    def issue_key(self, tenant: str | None, description: str = "") -> IssuedKey:
        return self._any().issue_key(tenant, description)

    def revoke_key(self, key_id: str) -> None:
        self._any().revoke_key(key_id)

    def train(self, name: str) -> bool:
        """Train the collection's tree on every node (each node trains on its own vectors)."""
        parts = self._fan([n.address for n in self.nodes.values()], lambda c: c.train(name))
        return all(parts)

    # -- vectors --------------------------------------------------------------------------------
    def upsert(
        self,
        collection: str,
        ids: Any,
        vectors: Any,
        documents: Sequence[Document] | None = None,
        *,
        tenant: str | None = None,
        batch_size: int | None = None,
    ) -> WriteResult:
        return self._routed(
            tenant,
            lambda c: c.upsert(
                collection, ids, vectors, documents, tenant=tenant, batch_size=batch_size
            ),
        )

    def get(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> Records:
        return self._routed(
            self._by_owner(tenant, owner),
            lambda c: c.get(collection, ids, tenant=tenant, owner=owner),
        )

    def delete(
        self, collection: str, ids: Any, *, tenant: str | None = None, owner: str | None = None
    ) -> WriteResult:
        return self._routed(
            self._by_owner(tenant, owner),
            lambda c: c.delete(collection, ids, tenant=tenant, owner=owner),
        )

    def grant(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        by = self._by_owner(tenant, owner)
        res = self._routed(
            by, lambda c: c.grant(collection, ids, to_tenant, tenant=tenant, owner=owner)
        )
        src, dst = self.placements.get(by or ""), self.placements.get(to_tenant)
        if src is not None and dst is not None and src.node != dst.node:
            self.readsets.setdefault(to_tenant, set()).add(src.node)  # as the node recorded
        return res

    def revoke(
        self,
        collection: str,
        ids: Any,
        to_tenant: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> WriteResult:
        return self._routed(
            self._by_owner(tenant, owner),
            lambda c: c.revoke(collection, ids, to_tenant, tenant=tenant, owner=owner),
        )

    def count(self, collection: str, *, tenant: str | None = None) -> int:
        """Vectors the tenant may read: its own and those granted to it, on every node."""

        def attempt() -> int:
            addresses, _ = self._search_addresses([tenant or self._own_tenant()], False)
            return sum(self._fan(addresses, lambda c: c.count(collection, tenant=tenant)))

        return self._redirected(attempt)

    # -- semantic cache: a tenant's cache lives on its home node -------------------------------
    def __getattr__(self, name: str) -> Any:
        """The `cache_*` calls of Client: per tenant on its home node (the `tenant` keyword,
        or the key's tenant); cache_report_load / cache_set_capacity on every node."""
        if not name.startswith("cache_") or not hasattr(Client, name):
            raise AttributeError(name)
        if name in ("cache_report_load", "cache_set_capacity"):

            def everywhere(*args: Any, **kw: Any) -> Any:
                addresses = [n.address for n in self.nodes.values()]
                return self._fan(addresses, lambda c: getattr(c, name)(*args, **kw))[0]

            return everywhere

        def routed(*args: Any, **kw: Any) -> Any:
            return self._routed(kw.get("tenant"), lambda c: getattr(c, name)(*args, **kw))

        return routed

    def list_ids(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> IdPage:
        return self._routed(
            self._by_owner(tenant, owner),
            lambda c: c.list_ids(collection, tenant=tenant, owner=owner, after=after, limit=limit),
        )

    def _by_owner(self, tenant: str | None, owner: str | None) -> str | None:
        """Route by the owner when its home is known (the admin); a tenant key's home
        forwards a call naming another owner."""
        if owner and owner in self.placements:
            return owner
        return tenant

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
        allow_partial: bool = False,
    ) -> SearchResult:
        """As Client.search, over the cluster: every node holding vectors the tenants may
        read is asked in parallel; the answers are merged top-k."""
        names = [tenant] if isinstance(tenant, str) else list(tenant or [])

        def one(c: Client) -> SearchResult:
            return c.search(
                collection,
                queries,
                k,
                tenant=tenant,
                params=params,
                with_documents=with_documents,
                with_vectors=with_vectors,
                require_all=require_all,
                where=where,
                explain=explain,
                timeout=timeout,
            )

        def attempt() -> SearchResult:
            addresses, total = self._search_addresses(names or [self._own_tenant()], allow_partial)
            if len(addresses) == 1 and total == 1:
                self.last_coverage = (1, 1)
                return one(self._client(addresses[0]))
            parts = self._fan(addresses, one, allow_partial)
            self.last_coverage = (len(parts), total)
            return merge_topk(parts, k)

        return self._redirected(attempt)

    def _search_addresses(self, tenants: list[str], allow_partial: bool) -> tuple[list[str], int]:
        """Addresses of the live nodes to ask, and how many nodes hold the tenants' vectors
        (read sets grown by another client's grants are seen after placement_ttl)."""
        if time.monotonic() - self._loaded_at > self.placement_ttl:
            self.refresh()
        nodes: set[str] = set()
        for t in tenants:
            p = self.placements.get(t)
            if p is None:
                self.refresh()
                p = self.placements.get(t)
            if p is not None:
                nodes.add(p.node)
            nodes |= self.readsets.get(t, set())
        out = []
        for n in sorted(nodes):
            info = self.nodes.get(n)
            if info is None and not allow_partial:
                raise Unavailable(f"expected node {n} of the search to be live, got it down")
            if info is not None:
                out.append(info.address)
        if not out and not allow_partial:
            return [self._home_any()], 1
        return out, max(len(nodes), 1)

    def _fan(
        self, addresses: list[str], fn: Callable[[Client], T], allow_partial: bool = False
    ) -> list[T]:
        """fn on every node in parallel. A node that is down or does not answer within the
        deadline fails the call with Unavailable (skipped with allow_partial)."""
        futs = [self._pool.submit(fn, self._client(a)) for a in addresses]
        out: list[T] = []
        for address, f in zip(addresses, futs, strict=True):
            try:
                out.append(f.result())
            except (Unavailable, DeadlineExceeded) as e:
                if isinstance(e, TenantMoved | TenantMoving):
                    raise
                if not allow_partial:
                    raise Unavailable(f"expected node {address} to answer, got {e}") from None
        if not out:
            raise Unavailable("expected at least one node of the search to answer, got none")
        return out
