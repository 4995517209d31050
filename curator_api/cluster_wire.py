"""Cluster messages on the wire: placements (GetPlacement) and the TENANT_MOVED /
TENANT_MOVING answers (their trailing metadata, and the errors the SDK raises from them)."""

from __future__ import annotations

from typing import Any

from curator.cluster.contracts import NodeInfo, Placement
from curator.errors import TenantMoved, TenantMoving, Unavailable
from curator_api.v1 import curator_pb2 as pb

__all__ = [
    "moved_error",
    "moved_metadata",
    "placement_from_pb",
    "placement_to_pb",
]


_MOVED = {TenantMoved.reason: TenantMoved, TenantMoving.reason: TenantMoving}


def moved_metadata(e: TenantMoved | TenantMoving) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of an UNAVAILABLE answer for a tenant homed elsewhere."""
    return (
        ("curator-reason", e.reason),
        ("curator-tenant", e.tenant),
        ("curator-node", getattr(e, "node", "")),
        ("curator-address", getattr(e, "address", "")),
        ("curator-epoch", str(e.epoch)),
        ("grpc-retry-pushback-ms", "-1"),  # gRPC must not retry it: the caller re-routes
    )


def moved_error(details: str, metadata: Any) -> Unavailable | None:
    """TenantMoved / TenantMoving from an UNAVAILABLE answer's trailing metadata (None when it
    names no reason)."""
    md = {m.key: m.value for m in metadata or ()}
    cls = _MOVED.get(md.get("curator-reason", ""))
    if cls is None:
        return None
    epoch = int(md.get("curator-epoch", "0") or 0)
    e: TenantMoved | TenantMoving
    if cls is TenantMoved:
        e = TenantMoved(
            details,
            tenant=md.get("curator-tenant", ""),
            node=md.get("curator-node", ""),
            epoch=epoch,
            address=md.get("curator-address", ""),
        )
    else:
        e = TenantMoving(details, tenant=md.get("curator-tenant", ""), epoch=epoch)
    return e


def placement_to_pb(
    node_id: str,
    nodes: dict[str, NodeInfo],
    placements: list[Placement],
    readsets: dict[str, set[str]],
) -> pb.PlacementResponse:
    return pb.PlacementResponse(
        node_id=node_id,
        nodes=[pb.NodeEntry(node_id=n.node_id, address=n.address) for n in nodes.values()],
        placements=[
            pb.PlacementEntry(
                tenant=p.tenant,
                node=p.node,
                epoch=p.epoch,
                state=p.state,
                readset=sorted(readsets.get(p.tenant, ())),
            )
            for p in placements
        ],
    )


def placement_from_pb(
    m: pb.PlacementResponse,
) -> tuple[dict[str, NodeInfo], dict[str, Placement], dict[str, set[str]]]:
    """(nodes by id, placements by tenant, read sets by tenant); placements carry no global
    tenant id (0): clients route by name."""
    nodes = {n.node_id: NodeInfo(n.node_id, n.address) for n in m.nodes}
    places = {p.tenant: Placement(p.tenant, 0, p.node, p.epoch, p.state) for p in m.placements}
    return nodes, places, {p.tenant: set(p.readset) for p in m.placements}
