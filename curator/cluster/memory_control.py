"""An in-memory ControlPlane (curator.cluster.contracts) for unit tests and one-process demos.

Same semantics as the etcd one: one global revision counter; every stored record carries the
revision of its last change; a compare-and-swap succeeds only if the stored record still has
the expected record's revision (or is absent when `expected` is None). Thread-safe.
"""

from __future__ import annotations

import dataclasses
import threading

from curator.cluster.contracts import MoveRecord, NodeInfo, Placement

__all__ = ["MemoryControlPlane"]


class MemoryControlPlane:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rev = 0
        self._nodes: dict[str, NodeInfo] = {}
        self._placements: dict[str, Placement] = {}
        self._moves: dict[str, MoveRecord] = {}
        self._readsets: dict[str, set[str]] = {}

    def add_node(self, node: NodeInfo) -> None:
        with self._lock:
            self._nodes[node.node_id] = node

    def remove_node(self, node_id: str) -> None:
        with self._lock:
            self._nodes.pop(node_id, None)

    def nodes(self) -> dict[str, NodeInfo]:
        with self._lock:
            return dict(self._nodes)

    def placement(self, tenant: str) -> Placement | None:
        with self._lock:
            return self._placements.get(tenant)

    def placements(self) -> dict[str, Placement]:
        with self._lock:
            return dict(self._placements)

    def cas_placement(self, expected: Placement | None, new: Placement) -> Placement | None:
        with self._lock:
            if not _same(self._placements.get(new.tenant), expected):
                return None
            self._rev += 1
            stored = dataclasses.replace(new, revision=self._rev)
            self._placements[new.tenant] = stored
            return stored

    def move(self, tenant: str) -> MoveRecord | None:
        with self._lock:
            return self._moves.get(tenant)

    def moves(self) -> dict[str, MoveRecord]:
        with self._lock:
            return dict(self._moves)

    def cas_move(self, expected: MoveRecord | None, new: MoveRecord | None) -> MoveRecord | None:
        if new is None and expected is None:
            raise ValueError("expected a record to delete or to store, got neither")
        tenant = (new or expected).tenant  # type: ignore[union-attr]
        with self._lock:
            if not _same(self._moves.get(tenant), expected):
                return None
            self._rev += 1
            if new is None:
                gone = self._moves.pop(tenant)
                return dataclasses.replace(gone, phase="deleted", revision=self._rev)
            stored = dataclasses.replace(new, revision=self._rev)
            self._moves[tenant] = stored
            return stored

    def add_readset(self, tenant: str, node: str) -> None:
        with self._lock:
            self._readsets.setdefault(tenant, set()).add(node)

    def readset(self, tenant: str) -> set[str]:
        with self._lock:
            return set(self._readsets.get(tenant, ()))


def _same(stored: Placement | MoveRecord | None, expected: Placement | MoveRecord | None) -> bool:
    if stored is None or expected is None:
        return stored is None and expected is None
    return stored.revision == expected.revision
