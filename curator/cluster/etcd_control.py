"""EtcdControl: the cluster's ControlPlane on etcd v3 (aetcd), with a watch-fed local cache.

Keys under ``/curator/v1/`` (all values JSON): ``nodes/<node>`` {address, lease, headroom} on
a lease of `lease_ttl` seconds (10) renewed every third of it; ``tenants/<name>`` {id, group}
with ids from the CAS counter ``counters/tenant_id``; ``placement/<tenant>``;
``readsets/<tenant>/<node>``; ``moves/<tenant>``; ``keys/<digest>`` (API keys usable on every
node); ``collections/<name>``; ``controller`` {node} (curator.cluster.election).

Reads (`placement`, `nodes`, `readset`, `key`...) answer from the cache, never from etcd, so
the data path keeps serving while etcd is down. Writes go to etcd with a short deadline and
raise Unavailable when it cannot be reached. gRPC handlers are threads: the asyncio client
runs on a daemon thread of its own and every call here is synchronous.

>>> ctl = EtcdControl("127.0.0.1:2379", node=NodeInfo("n1", "127.0.0.1:50061"))  # doctest: +SKIP
>>> ctl.start(); ctl.create_tenant("acme", node="n1")                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

try:
    import aetcd
except ImportError:  # the `cluster` extra is not installed: EtcdControl refuses to start
    aetcd = None

from curator.cluster.contracts import MoveRecord, NodeInfo, Placement
from curator.config import GRPC_RECONNECT_OPTIONS
from curator.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable

__all__ = ["ROOT", "EtcdControl"]

log = logging.getLogger(__name__)

ROOT = "/curator/v1/"
LEASE_TTL = 10
T = TypeVar("T")

#: (key, value) of a change seen by the watch; value None: deleted.
Listener = Callable[[str, "bytes | None"], None]


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument(f"expected the etcd endpoint as host:port, got {text!r}")
    return host, int(port)


class EtcdControl:
    """endpoint: "host:port" of etcd; node: this process's node (None: a client that only
    reads and writes records); timeout: deadline of each etcd call in seconds; lease_ttl:
    seconds a dead process keeps its node record (and its moves and controller role)."""

    def __init__(
        self,
        endpoint: str,
        node: NodeInfo | None = None,
        timeout: float = 2.0,
        lease_ttl: int = LEASE_TTL,
    ) -> None:
        self._host, self._port = _endpoint(endpoint)
        if type(lease_ttl) is not int or not 2 <= lease_ttl <= 300:
            raise InvalidArgument(f"expected lease_ttl seconds in [2, 300], got {lease_ttl!r}")
        self.node = node
        self.timeout = timeout
        self.lease_ttl = lease_ttl
        self.lease_id = 0  # this process's current lease (0: none yet)
        self._leasing = False
        self._kv: dict[str, tuple[bytes, int]] = {}  # key -> (value, mod_revision)
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._loaded = threading.Event()
        self.connected = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="etcd")
        self._client: aetcd.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, wait: float = 10.0) -> None:
        """Connect and load the cache; raises Unavailable if etcd does not answer within
        `wait` seconds."""
        if aetcd is None:
            raise FailedPrecondition(
                "expected the cluster extra for cluster mode (pip install 'curator-db[cluster]'), "
                "got no aetcd module"
            )
        self._thread.start()
        self._client = aetcd.Client(
            self._host, self._port, timeout=self.timeout, options=dict(GRPC_RECONNECT_OPTIONS)
        )
        self._call(self._start_tasks())
        if not self._loaded.wait(wait):
            raise Unavailable(f"expected etcd at {self._host}:{self._port}, got no answer")

    async def _start_tasks(self) -> None:
        self._sync_task = asyncio.create_task(self._sync_loop())

    def register(self, facts: Callable[[], dict[str, Any]] | None = None) -> None:
        """Publish this node under its lease (renewed until close); call it once the node
        serves, so that placement never picks a node still loading. `facts()`: more fields
        of the node record (e.g. headroom), published again when they change."""
        if self.node is None:
            raise InvalidArgument("expected a node to register, got a client-only control")
        self._lease(self.node, facts)

    def session(self, wait: float = 5.0) -> int:
        """This process's lease id, kept alive until close (a node's registration lease; a
        client's own lease otherwise). Unavailable if none is granted within `wait` s."""
        if not self._leasing:
            self._lease(None, None)
        deadline = time.monotonic() + wait
        while not self.lease_id:
            if time.monotonic() > deadline:
                raise Unavailable("expected an etcd lease for this process, got none in time")
            time.sleep(0.02)
        return self.lease_id

    def _lease(self, node: NodeInfo | None, facts: Callable[[], dict[str, Any]] | None) -> None:
        self._leasing = True
        self.spawn(lambda: self._lease_loop(node, facts))

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run the coroutine `fn()` as a task on the etcd thread until close."""

        async def start() -> None:
            self._tasks.append(asyncio.create_task(fn()))

        self._call(start())

    @property
    def client(self) -> Any:
        """The aetcd client (use it on the etcd thread only, e.g. in a `spawn`ed task)."""
        return self._client

    def lease_alive(self, lease_id: int) -> bool:
        """Whether etcd still holds lease `lease_id` (Unavailable without etcd)."""
        if lease_id <= 0:
            return False
        assert self._client is not None
        info = self._call(self._client.get_lease_info(lease_id))
        return int(info.TTL) > 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the aetcd client on the etcd thread and wait for it
        (Unavailable if etcd does not answer within the deadline)."""
        return self._call(coro)

    def raw(self, key: str) -> Any:
        """The cached JSON value of `key` under the root (None if absent)."""
        hit = self._get(key)
        return None if hit is None else hit[0]

    def node_facts(self, node: str) -> dict[str, Any]:
        """The node record's fields ({} if the node has no live lease)."""
        hit = self._get(f"nodes/{node}")
        return dict(hit[0]) if hit is not None else {}

    def close(self) -> None:
        if self._closed or not self._thread.is_alive():
            return
        self._closed = True

        async def stop() -> None:
            for t in [*self._tasks, self._sync_task]:
                if t is not None:
                    t.cancel()
            if self._client is not None:
                await self._client.close()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        except Exception:  # closing is best effort: the process is going away
            log.debug("etcd client close failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def listen(self, fn: Listener) -> None:
        """Call fn(key, value) on the etcd thread for every change (and for every key at each
        (re)load); fn must be quick (hand work to a thread of your own)."""
        self._listeners.append(fn)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(self.timeout + 1.0)
        except (aetcd.exceptions.ClientError, TimeoutError, OSError) as e:
            fut.cancel()
            raise Unavailable(f"expected a reachable etcd, got {type(e).__name__}: {e}") from None

    # -- background: cache and lease ------------------------------------------------------------
    async def _sync_loop(self) -> None:
        assert self._client is not None
        while not self._closed:
            try:
                rng = await self._client.get_prefix(ROOT.encode())
                fresh = {kv.key.decode(): (kv.value, kv.mod_revision) for kv in rng}
                with self._lock:
                    gone = set(self._kv) - set(fresh)
                    self._kv = fresh
                for k, (v, _) in fresh.items():
                    self._notify(k, v)
                for k in gone:  # changes missed while away; a vanished tenant or collection
                    # is not dropped (an etcd restored empty must not delete every node's data)
                    if k.startswith(f"{ROOT}keys/"):
                        self._notify(k, None)
                    else:
                        log.warning("%s vanished from etcd while away; kept locally", k)
                self.connected = True
                self._loaded.set()
                watch = await self._client.watch_prefix(
                    ROOT.encode(), start_revision=rng.header.revision + 1
                )
                async for ev in watch:
                    key = ev.kv.key.decode()
                    with self._lock:
                        if ev.kind == "PUT":
                            self._kv[key] = (ev.kv.value, ev.kv.mod_revision)
                        else:
                            self._kv.pop(key, None)
                    self._notify(key, ev.kv.value if ev.kind == "PUT" else None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # etcd away: keep the cache, retry
                if self.connected:
                    log.warning("etcd watch lost (%s); serving from the cache", e)
                self.connected = False
                await asyncio.sleep(0.5)

    def _notify(self, key: str, value: bytes | None) -> None:
        for fn in self._listeners:
            try:
                fn(key, value)
            except Exception:
                log.exception("a control-plane listener failed on %s", key)

    async def _lease_loop(
        self, node: NodeInfo | None, facts: Callable[[], dict[str, Any]] | None
    ) -> None:
        assert self._client is not None
        key = f"{ROOT}nodes/{node.node_id}".encode() if node is not None else b""
        lease, published = None, b""
        while not self._closed:
            try:
                if lease is None:
                    lease = await self._client.lease(self.lease_ttl)
                    self.lease_id, published = lease.id, b""
                    if not self.connected and self._sync_task is not None:
                        self._sync_task.cancel()  # a stuck watch: reload from scratch
                        self._sync_task = asyncio.create_task(self._sync_loop())
                else:
                    reply = await lease.refresh()
                    if reply is None or reply.TTL <= 0:
                        lease = None  # expired while etcd was away: register again
                        continue
                if node is not None:
                    record = {"address": node.address, "lease": lease.id}
                    record.update(facts() if facts is not None else {})
                    value = json.dumps(record).encode()
                    if value != published:
                        await self._client.put(key, value, lease=lease)
                        published = value
                await asyncio.sleep(self.lease_ttl / 3)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("etcd lease renewal failed (%s)", e)
                lease = None
                self.connected = False
                await asyncio.sleep(0.5)

    # -- cache reads ----------------------------------------------------------------------------
    def _get(self, key: str) -> tuple[Any, int] | None:
        with self._lock:
            hit = self._kv.get(ROOT + key)
        return None if hit is None else (json.loads(hit[0] or b"null"), hit[1])

    def _prefix(self, prefix: str) -> dict[str, tuple[Any, int]]:
        p = ROOT + prefix
        with self._lock:
            items = [(k, v) for k, v in self._kv.items() if k.startswith(p)]
        return {k[len(p) :]: (json.loads(v or b"null"), r) for k, (v, r) in items}

    def nodes(self) -> dict[str, NodeInfo]:
        return {n: NodeInfo(n, v["address"]) for n, (v, _) in self._prefix("nodes/").items()}

    def tenant(self, name: str) -> tuple[int, str] | None:
        """(global id, group) of a registered tenant."""
        hit = self._get(f"tenants/{name}")
        return None if hit is None else (int(hit[0]["id"]), str(hit[0].get("group", "")))

    def tenants(self) -> dict[str, int]:
        return {n: int(v["id"]) for n, (v, _) in self._prefix("tenants/").items()}

    def placement(self, tenant: str) -> Placement | None:
        hit = self._get(f"placement/{tenant}")
        return None if hit is None else Placement(tenant=tenant, revision=hit[1], **hit[0])

    def placements(self) -> dict[str, Placement]:
        found = self._prefix("placement/").items()
        return {t: Placement(tenant=t, revision=r, **v) for t, (v, r) in found}

    def readset(self, tenant: str) -> set[str]:
        # a node id has no "/"; a longer rest belongs to a tenant named "<tenant>/..."
        return {n for n in self._prefix(f"readsets/{tenant}/") if "/" not in n}

    def readsets(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for key in self._prefix("readsets/"):
            t, _, node = key.rpartition("/")
            out.setdefault(t, set()).add(node)
        return out

    def move(self, tenant: str) -> MoveRecord | None:
        hit = self._get(f"moves/{tenant}")
        return None if hit is None else MoveRecord(tenant=tenant, revision=hit[1], **hit[0])

    def moves(self) -> dict[str, MoveRecord]:
        found = self._prefix("moves/").items()
        return {t: MoveRecord(tenant=t, revision=r, **v) for t, (v, r) in found}

    def key(self, digest: str) -> dict[str, Any] | None:
        hit = self._get(f"keys/{digest}")
        return None if hit is None else dict(hit[0])

    def collections(self) -> dict[str, dict[str, Any]]:
        return {n: v for n, (v, _) in self._prefix("collections/").items()}

    # -- writes ---------------------------------------------------------------------------------
    async def _cas(self, key: str, revision: int, value: bytes | None) -> int | None:
        """Put (or delete, value None) `key` if its mod_revision is `revision` (0: absent);
        the new revision, or None if the swap lost."""
        assert self._client is not None
        tx = self._client.transactions
        k = (ROOT + key).encode()
        op = tx.delete(k) if value is None else tx.put(k, value)
        ok, responses = await self._client.transaction(
            compare=[tx.mod(k) == revision], success=[op], failure=[]
        )
        if not ok:
            return None
        r = responses[0]
        header = r.response_put.header if value is not None else r.response_delete_range.header
        return int(header.revision)

    def _cas_sync(self, key: str, revision: int, value: bytes | None) -> int | None:
        new_rev = self._call(self._cas(key, revision, value))
        if new_rev is not None:  # seen at once by this process, before the watch echoes it
            with self._lock:
                if value is None:
                    self._kv.pop(ROOT + key, None)
                else:
                    self._kv[ROOT + key] = (value, new_rev)
        return new_rev

    def cas_placement(self, expected: Placement | None, new: Placement) -> Placement | None:
        body = {f: getattr(new, f) for f in ("tenant_id", "node", "epoch", "state", "group")}
        rev = expected.revision if expected is not None else 0
        got = self._cas_sync(f"placement/{new.tenant}", rev, json.dumps(body).encode())
        return None if got is None else dataclasses.replace(new, revision=got)

    def cas_move(self, expected: MoveRecord | None, new: MoveRecord | None) -> MoveRecord | None:
        rev = expected.revision if expected is not None else 0
        if new is None:
            if expected is None:
                raise InvalidArgument("expected a move record to delete, got none")
            got = self._cas_sync(f"moves/{expected.tenant}", rev, None)
            return None if got is None else dataclasses.replace(expected, phase="deleted")
        body = dataclasses.asdict(new)
        del body["tenant"], body["revision"]
        got = self._cas_sync(f"moves/{new.tenant}", rev, json.dumps(body).encode())
        return None if got is None else dataclasses.replace(new, revision=got)

    def add_readset(self, tenant: str, node: str) -> None:
        if node in self.readset(tenant):
            return  # no etcd round trip on the data path once the entry exists
        self._put(f"readsets/{tenant}/{node}", b"{}")

    def _put(self, key: str, value: bytes) -> None:
        assert self._client is not None
        res = self._call(self._client.put((ROOT + key).encode(), value))
        with self._lock:
            self._kv[ROOT + key] = (value, res.header.revision)

    def _delete(self, key: str) -> None:
        assert self._client is not None
        self._call(self._client.delete((ROOT + key).encode()))
        with self._lock:
            self._kv.pop(ROOT + key, None)

    def put_key(self, digest: str, record: dict[str, Any]) -> None:
        self._put(f"keys/{digest}", json.dumps(record).encode())

    def delete_key(self, digest: str) -> None:
        self._delete(f"keys/{digest}")

    def key_digests(self, key_id: str) -> list[str]:
        return [d for d, (v, _) in self._prefix("keys/").items() if v.get("key_id") == key_id]

    def put_collection(self, name: str, spec: dict[str, Any]) -> None:
        self._put(f"collections/{name}", json.dumps(spec).encode())

    def delete_collection(self, name: str) -> None:
        self._delete(f"collections/{name}")

    def create_tenant(self, name: str, node: str, group: str = "") -> Placement:
        """Register `name` with the next global id and place it on `node`, in one etcd
        transaction. Raises AlreadyExists if it is registered, Unavailable without etcd."""
        return self._call(self._create_tenant(name, node, group))

    async def _create_tenant(self, name: str, node: str, group: str) -> Placement:
        assert self._client is not None
        tx = self._client.transactions
        counter = f"{ROOT}counters/tenant_id".encode()
        tkey, pkey = f"{ROOT}tenants/{name}".encode(), f"{ROOT}placement/{name}".encode()
        for _ in range(50):  # lost races on the counter: read it again
            cur = await self._client.get(counter)
            next_id = (int(cur.value) if cur else 0) + 1
            rec = {"tenant_id": next_id, "node": node, "epoch": 1, "state": "serving"}
            rec["group"] = group
            entry = json.dumps({"id": next_id, "group": group}).encode()
            ok, responses = await self._client.transaction(
                compare=[
                    tx.mod(counter) == (cur.mod_revision if cur else 0),
                    tx.version(tkey) == 0,
                ],
                success=[
                    tx.put(counter, str(next_id).encode()),
                    tx.put(tkey, entry),
                    tx.put(pkey, json.dumps(rec).encode()),
                ],
                failure=[],
            )
            if ok:
                rev = int(responses[2].response_put.header.revision)
                with self._lock:
                    self._kv[tkey.decode()] = (entry, rev)
                    self._kv[pkey.decode()] = (json.dumps(rec).encode(), rev)
                return Placement(tenant=name, revision=rev, **rec)  # type: ignore[arg-type]
            if await self._client.get(tkey):
                raise AlreadyExists(f"expected a new tenant name, got {name!r}")
        raise Unavailable("expected to allocate a tenant id, got 50 lost races in a row")

    def refresh_tenant(self, name: str) -> Placement | None:
        """Read the tenant's registry and placement from etcd now (not from the cache, which
        may lag a create by a few milliseconds) and update the cache."""
        return self._call(self._refresh_tenant(name))

    async def _refresh_tenant(self, name: str) -> Placement | None:
        assert self._client is not None
        for key in (f"{ROOT}tenants/{name}", f"{ROOT}placement/{name}"):
            kv = await self._client.get(key.encode())
            with self._lock:
                if kv is None:
                    self._kv.pop(key, None)
                elif kv.mod_revision >= self._kv.get(key, (b"", 0))[1]:
                    self._kv[key] = (kv.value, kv.mod_revision)
        return self.placement(name)

    def raise_id_floor(self, floor: int) -> None:
        """Make the tenant id counter at least `floor` (a node's largest local id), so that
        an etcd restored from an old backup never hands out an id a node already uses."""
        self._call(self._raise_id_floor(floor))

    async def _raise_id_floor(self, floor: int) -> None:
        assert self._client is not None
        tx = self._client.transactions
        counter = f"{ROOT}counters/tenant_id".encode()
        for _ in range(50):
            cur = await self._client.get(counter)
            if cur is not None and int(cur.value) >= floor:
                return
            ok, _ = await self._client.transaction(
                compare=[tx.mod(counter) == (cur.mod_revision if cur else 0)],
                success=[tx.put(counter, str(floor).encode())],
                failure=[],
            )
            if ok:
                return
        raise Unavailable("expected to raise the tenant id counter, got 50 lost races in a row")

    def delete_tenant(self, name: str) -> None:
        """Forget a tenant's keys, registry, placement and read sets (its id is never
        reused; a tenant created again under its name gets none of its keys)."""
        assert self._client is not None
        keys = [d for d, (v, _) in self._prefix("keys/").items() if v.get("tenant") == name]
        for k in [*(f"keys/{d}" for d in keys), f"tenants/{name}", f"placement/{name}"]:
            self._delete(k)
        self._delete(f"moves/{name}")
        for node in self.readset(name):  # not a prefix delete: "a/b" is another tenant's
            self._delete(f"readsets/{name}/{node}")
