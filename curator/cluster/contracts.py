"""What the cluster's parts agree on: placement records, move records and the calls a move
makes on a control plane, on a node and on a bundle store.

The unit of placement is the tenant that owns the vectors. Its record says which node is its
home, at which epoch, and in which state:

- ``serving``: the home node acknowledges its writes and serves its reads;
- ``moving``: a move copies it to another node while the home still serves it;
- ``handoff``: the home has frozen it (its writes are refused with TENANT_MOVING, never
  acknowledged) and recorded a fence sequence; the target applies the last delta;
- ``activating``: the epoch is bumped and the target is home; it starts acknowledging writes
  when the state returns to ``serving``.

Every change of a placement record is a compare-and-swap on the record's revision (etcd's
mod_revision), so two controllers cannot both move a tenant and a stale one loses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

__all__ = [
    "BundleStore",
    "ControlPlane",
    "MoveRecord",
    "NodeInfo",
    "NodeOps",
    "Placement",
    "STATES",
    "PHASES",
]

STATES = ("serving", "moving", "handoff", "activating")
PHASES = ("prepare", "copy", "catchup", "handoff", "flip", "activate", "cleanup", "done", "aborted")


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str  # host:port of its gRPC service


@dataclasses.dataclass(frozen=True)
class Placement:
    tenant: str
    tenant_id: int  # global id: the same on every node
    node: str
    epoch: int
    state: str = "serving"
    group: str = ""
    revision: int = 0  # the control plane's revision of this record (0: not stored yet)


@dataclasses.dataclass(frozen=True)
class MoveRecord:
    tenant: str
    source: str
    target: str
    phase: str
    bundle: str = ""  # the bundle store key of the base copy
    base_seq: int = 0  # the source's sequence the base copy was read at
    caught_up_seq: int = 0  # the last source sequence the target applied
    fence_seq: int = 0  # the source's sequence when it froze the tenant (0: not yet)
    driver: str = ""  # who drives it: a node id, or "" for a process that is not a node
    driver_lease: int = 0  # the driver's control-plane lease: gone means the driver died
    revision: int = 0


class ControlPlane(Protocol):
    """The cluster's shared state (etcd in production, a dict in unit tests)."""

    def nodes(self) -> dict[str, NodeInfo]: ...

    def placement(self, tenant: str) -> Placement | None: ...

    def placements(self) -> dict[str, Placement]: ...

    def cas_placement(self, expected: Placement | None, new: Placement) -> Placement | None:
        """Store `new` if the stored record still has `expected`'s revision (None: absent).
        Returns the stored record with its new revision, or None if the swap lost."""
        ...

    def move(self, tenant: str) -> MoveRecord | None: ...

    def moves(self) -> dict[str, MoveRecord]: ...

    def cas_move(self, expected: MoveRecord | None, new: MoveRecord | None) -> MoveRecord | None:
        """As `cas_placement`; `new=None` deletes the record. Returns the stored record
        (or a record with phase "deleted" after a delete), None if the swap lost."""
        ...

    def add_readset(self, tenant: str, node: str) -> None:
        """Record that `tenant` may read vectors held on `node` (grants from its owners)."""
        ...

    def readset(self, tenant: str) -> set[str]: ...


class BundleStore(Protocol):
    """Where tenant bundles go between nodes: a directory, or object storage (S3 API)."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterable[str]: ...

    def size(self, key: str) -> int:
        """Bytes of the stored bundle (NotFound if absent)."""
        ...


class NodeOps(Protocol):
    """What a move asks of the source and the target node. Every call is idempotent: the
    mover may repeat any of them after a crash of any party."""

    def export_tenant(self, tenant: str, since_seq: int, store: BundleStore, key: str) -> int:
        """Write a bundle of `tenant` to `store` under `key` and return the node sequence it
        covers up to. since_seq 0: everything the tenant owns (vectors, documents, labels, the
        grants it gave, its record, keys, cache entries, policies and examples); otherwise
        the current state (or a tombstone) of everything its writes in (since_seq, now]
        touched."""
        ...

    def import_tenant(self, tenant: str, store: BundleStore, key: str) -> dict[str, int] | None:
        """Apply a bundle written by `export_tenant` (a base copy or a delta); counts of what
        changed ("upserted", "deleted", ...) if the node reports them."""
        ...

    def freeze_tenant(self, tenant: str) -> int:
        """Refuse the tenant's writes from now on (TENANT_MOVING, never acknowledged) and
        return the fence: the node sequence after the tenant's last acknowledged write."""
        ...

    def unfreeze_tenant(self, tenant: str) -> None: ...

    def mark_moved(self, tenant: str, node: str, epoch: int) -> None:
        """Persist that the tenant now lives on `node` at `epoch`: its reads and writes
        here are answered with TENANT_MOVED naming the new home."""
        ...

    def drop_moved(self, tenant: str) -> None:
        """Delete the local copy of a tenant that moved away (after the grace period)."""
        ...

    def headroom(self) -> int:
        """Bytes the node can still store (its LMDB map cap or free disk, less used pages
        and the reserve kept for deletes)."""
        ...
