"""Live tenant moves between node processes (scale-out.md §5.7).

`NodesServicer`: the `Nodes` gRPC service, the calls a move makes on this node (export,
import, freeze, unfreeze, mark moved, drop), over the local Database and this node's bundle
store. Admin key only; every field is checked before anything changes.

`move_tenant`: what `Admin.MoveTenant` runs on the node it reached: the Mover
(curator.cluster.mover) over the etcd control plane, this node's own NodeOps for itself and
RemoteNodeOps for the others (addresses from the nodes' leases), with the caller's admin
credentials forwarded. The move record names this node and its lease as the driver.

`recover`: the controller's resumption of a stranded move (server.recovery), with the
cluster's admin key.

Test only: the environment variable CURATOR_TEST_MOVE_GATE (read once, at import, from the
node's own environment; no request can set or change it) names a directory of gate files. A
move this node drives waits at the start of phase P of tenant T while the file `<dir>/T.P`
exists, so that a test can kill -9 a node of the move at that phase
(tests/test_cluster_node_kill.py). Unset (always, outside tests): no hook.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.cluster.bundle_store import check_key
from curator.cluster.contracts import BundleStore, NodeOps
from curator.cluster.mover import Mover, MoveReport
from curator.cluster.node_ops import LocalNodeOps
from curator.database import Database
from curator.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    TenantMoved,
    TenantMoving,
    Unavailable,
)
from curator.validation import check_name
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from server import rules
from server.auth import current_principal
from server.cluster_metrics import observe_move
from server.remote_ops import RemoteNodeOps
from server.status import rpc

if TYPE_CHECKING:
    from server.cluster import ClusterNode

__all__ = ["NodesServicer", "check_node_id", "move_tenant", "recover", "report_to_pb"]

_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_AUTH_HEADERS = ("authorization", "x-api-key")
#: Reads that reached the source just before the flip finish before its copy is dropped.
GRACE_S = 0.5
#: Test only (see the module docstring): where the gate files of moves are; "" none.
_TEST_GATE = os.environ.get("CURATOR_TEST_MOVE_GATE", "")


def check_node_id(node: Any) -> str:
    if not isinstance(node, str) or not _NODE_ID.fullmatch(node):
        raise InvalidArgument(
            f"expected a node id of 1-64 letters, digits, '_', '.', '-', got {node!r:.80}"
        )
    return node


def _seq(value: int, what: str) -> int:
    if not 0 <= value < 2**63:
        raise InvalidArgument(f"expected {what} in [0, 2**63), got {value}")
    return value


class NodesServicer(pb_grpc.NodesServicer):
    def __init__(self, state: Any) -> None:
        self._state = state  # .db: Database, .cluster: ClusterNode | None

    def _ops(self) -> tuple[LocalNodeOps, BundleStore]:
        rules.require_admin(current_principal.get())
        c: ClusterNode | None = getattr(self._state, "cluster", None)
        if c is None:
            raise FailedPrecondition("expected a node in cluster mode, got a single server")
        return LocalNodeOps(self._state.db), _store(c)

    @rpc
    def ExportTenant(self, request: pb.BundleRequest, context: Any) -> Any:
        ops, store = self._ops()
        tenant, key = check_name(request.tenant, "tenant"), check_key(request.key)
        seq = ops.export_tenant(tenant, _seq(request.since_seq, "since_seq"), store, key)
        return pb.SeqResponse(seq=seq)

    @rpc
    def ImportTenant(self, request: pb.BundleRequest, context: Any) -> Any:
        ops, store = self._ops()
        tenant, key = check_name(request.tenant, "tenant"), check_key(request.key)
        return pb.ImportResponse(counts=ops.import_tenant(tenant, store, key))

    @rpc
    def FreezeTenant(self, request: pb.TenantRef, context: Any) -> Any:
        ops, _ = self._ops()
        return pb.SeqResponse(seq=ops.freeze_tenant(check_name(request.name, "tenant")))

    @rpc
    def UnfreezeTenant(self, request: pb.TenantRef, context: Any) -> Any:
        ops, _ = self._ops()
        ops.unfreeze_tenant(check_name(request.name, "tenant"))
        return pb.Empty()

    @rpc
    def MarkMoved(self, request: pb.MarkMovedRequest, context: Any) -> Any:
        ops, _ = self._ops()
        tenant, node = check_name(request.tenant, "tenant"), check_node_id(request.node)
        ops.mark_moved(tenant, node, _seq(request.epoch, "epoch"))
        return pb.Empty()

    @rpc
    def DropMoved(self, request: pb.TenantRef, context: Any) -> Any:
        ops, _ = self._ops()
        ops.drop_moved(check_name(request.name, "tenant"))
        return pb.Empty()


def _store(c: ClusterNode) -> BundleStore:
    if c.store is None:
        raise FailedPrecondition(
            f"expected node {c.node_id} started with --bundle-dir or --bundle-s3 (where "
            "bundles travel between nodes), got neither"
        )
    return c.store


class _Counted:
    """A node's NodeOps that sums what its imports wrote."""

    def __init__(self, ops: NodeOps) -> None:
        self.ops = ops
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def import_tenant(self, tenant: str, store: BundleStore, key: str) -> dict[str, int] | None:
        counts = self.ops.import_tenant(tenant, store, key)
        with self._lock:
            for k, v in (counts or {}).items():
                self.counts[k] = self.counts.get(k, 0) + v
        return counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ops, name)


def move_tenant(
    c: ClusterNode, db: Database, request: pb.MoveTenantRequest, context: Any
) -> tuple[MoveReport, dict[str, int]]:
    """Move `request.tenant` to node `request.to_node` (this node drives it), or resume or
    abort its recorded move; the report and the target's import counts. Unknown tenant or
    no recorded move: NotFound; unknown or dead node: InvalidArgument / NotFound; all
    before anything changes."""
    tenant = check_name(request.tenant, "tenant")
    if request.resume and request.abort:
        raise InvalidArgument("expected resume or abort, got both")
    _store(c)
    p = c.control.placement(tenant)
    if p is None:
        raise NotFound(f"expected a placed tenant, got {tenant!r}")
    rec = c.control.move(tenant)
    if request.resume or request.abort:
        if rec is None:
            raise NotFound(f"expected a move of {tenant!r} in progress, got none")
        if request.to_node and request.to_node != rec.target:
            raise InvalidArgument(
                f"expected --to {rec.target} (the move's), got {request.to_node!r}"
            )
        source, to_node = rec.source, rec.target
    else:
        source, to_node = p.node, check_node_id(request.to_node)
    live = c.control.nodes()
    if to_node not in live:
        raise NotFound(f"expected a live node to move to, got {to_node!r} (live: {sorted(live)})")
    md = [(m.key, m.value) for m in context.invocation_metadata() if m.key in _AUTH_HEADERS]
    mover, target = _mover(c, db, tenant, source, to_node, md)
    driving = c.recovery.driving(tenant) if c.recovery is not None else contextlib.nullcontext()
    with driving:
        try:
            if request.abort:
                return _observed(lambda: mover.abort(tenant), "call", target), {}
            if request.resume:
                return _observed(lambda: mover.resume(tenant), "call", target), target.counts
            return _observed(lambda: mover.move(tenant, to_node), "call", target), target.counts
        except Unavailable as e:
            left = c.control.move(tenant)
            if left is None or isinstance(e, TenantMoved | TenantMoving):
                raise
            # Not UNAVAILABLE: clients retry that, and the retry would only be refused with
            # the move in progress, hiding what happened.
            raise FailedPrecondition(
                f"expected the nodes of the move of {tenant!r} reachable, got: {e}. The move "
                f"is left at its {left.phase} phase to the controller, which finishes or "
                f"aborts it once the node is back (curator cluster move {tenant} --resume or "
                "--abort acts sooner)"
            ) from None


def recover(c: ClusterNode, db: Database, tenant: str, md: Sequence[tuple[str, str]]) -> str:
    """Resume the stranded move of `tenant` from this node (the mover aborts it if it fails
    before its flip); the phase it ended in. NotFound if it finished meanwhile."""
    rec = c.control.move(tenant)
    if rec is None:
        raise NotFound(f"expected a move of {tenant!r} in progress, got none")
    mover, target = _mover(c, db, tenant, rec.source, rec.target, md)
    return _observed(lambda: mover.resume(tenant), "recovered", target).phase


def _mover(
    c: ClusterNode,
    db: Database,
    tenant: str,
    source: str,
    to_node: str,
    md: Sequence[tuple[str, str]],
) -> tuple[Mover, _Counted]:
    """A Mover of `tenant` driven by this node between `source` and `to_node`, the target's
    ops counted."""
    store = _store(c)
    live = c.control.nodes()
    nodes: dict[str, NodeOps] = {}
    for node_id in {source, to_node}:
        if node_id == c.node_id:
            nodes[node_id] = LocalNodeOps(db)
        elif node_id in live:
            room = functools.partial(c.headroom_of, node_id)
            nodes[node_id] = RemoteNodeOps(c.channel(live[node_id].address), md, room)
        else:
            raise Unavailable(f"expected node {node_id} of the move live, got no lease for it")
    target = _Counted(nodes[to_node])
    nodes[to_node] = target
    driver = (c.node_id, c.control.session())
    hook = _gate(_TEST_GATE, tenant) if _TEST_GATE else None
    return Mover(c.control, nodes, store, grace_s=GRACE_S, driver=driver, hook=hook), target


def _gate(directory: str, tenant: str) -> Callable[[str], None]:
    """Test only: the Mover hook that waits (at most 5 min) while `directory/T.P` exists."""

    def hook(phase: str) -> None:
        path = Path(directory) / f"{tenant}.{phase}"
        deadline = time.monotonic() + 300
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    return hook


def _observed(run: Any, how: str, target: _Counted) -> MoveReport:
    """`run()`, counted in the move metrics by its outcome."""
    try:
        report: MoveReport = run()
    except Exception:
        observe_move(None, "failed", how)
        raise
    observe_move(report, report.phase if report.phase == "aborted" else "done", how,
                 target.counts.get("upserted", 0))  # fmt: skip
    return report


def report_to_pb(report: MoveReport, counts: dict[str, int]) -> pb.MoveTenantResponse:
    return pb.MoveTenantResponse(
        tenant=report.tenant,
        source=report.source,
        target=report.target,
        phase=report.phase,
        epoch=report.epoch,
        base_seq=report.base_seq,
        fence_seq=report.fence_seq,
        rounds=report.rounds,
        pause_seconds=report.pause_s,
        seconds=report.seconds,
        vectors=counts.get("upserted", 0),
    )
