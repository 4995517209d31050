"""RemoteNodeOps: the NodeOps of a move (curator.cluster.contracts) on another node, over its
`Nodes` gRPC service (admin key only).

The bundle travels through the bundle store both nodes reach: the remote node reads and
writes its own configured store (--bundle-dir / --bundle-s3), so the `store` argument only
names the store the caller means; the key goes over the wire. Errors come back as the
remote's CuratorError (the same class as in-process), or Unavailable if it cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from curator import errors
from curator.cluster.bundle_store import check_key
from curator.cluster.contracts import BundleStore
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc

__all__ = ["RemoteNodeOps"]

_ERRORS = {
    grpc.StatusCode[cls.code]: cls
    for cls in errors.CuratorError.__subclasses__()
    if cls.code in grpc.StatusCode.__members__
}


class RemoteNodeOps:
    """`channel`: to the node; `metadata`: the admin's credentials; `headroom`: the node's
    free bytes as it last published them (its etcd node record); `timeout`: per call (an
    export or import of a big tenant takes seconds)."""

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Sequence[tuple[str, str]],
        headroom: Callable[[], int],
        timeout: float = 300.0,
    ) -> None:
        self._stub = pb_grpc.NodesStub(channel)
        self._md = tuple(metadata)
        self.headroom = headroom
        self.timeout = timeout

    def export_tenant(self, tenant: str, since_seq: int, store: BundleStore, key: str) -> int:
        req = pb.BundleRequest(tenant=tenant, since_seq=since_seq, key=check_key(key))
        return int(self._call("ExportTenant", req).seq)

    def import_tenant(self, tenant: str, store: BundleStore, key: str) -> dict[str, int]:
        r = self._call("ImportTenant", pb.BundleRequest(tenant=tenant, key=check_key(key)))
        return {k: int(v) for k, v in r.counts.items()}

    def freeze_tenant(self, tenant: str) -> int:
        return int(self._call("FreezeTenant", pb.TenantRef(name=tenant)).seq)

    def unfreeze_tenant(self, tenant: str) -> None:
        self._call("UnfreezeTenant", pb.TenantRef(name=tenant))

    def mark_moved(self, tenant: str, node: str, epoch: int) -> None:
        self._call("MarkMoved", pb.MarkMovedRequest(tenant=tenant, node=node, epoch=epoch))

    def drop_moved(self, tenant: str) -> None:
        self._call("DropMoved", pb.TenantRef(name=tenant))

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._md, timeout=self.timeout)
        except grpc.RpcError as e:
            cls = _ERRORS.get(e.code(), errors.Unavailable)
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                cls = errors.Unavailable  # TENANT_MOVED/MOVING never answer these calls
            raise cls(f"node call {method} failed: {e.details()}") from None
