"""Per-tenant handoff state of a node: frozen tenants, moved tombstones and log pins.

A tenant being moved to another node goes through three local states here:

- frozen (in memory): its writes are refused with TenantMoving, never acknowledged. Set under
  the database's writer lock, so every write acknowledged before the freeze has a sequence at
  most the fence the freeze returns. Not persisted here: a cluster node restarted during a
  handoff freezes the tenant again before serving, from its placement in etcd
  (server/cluster.py), and a resumed mover re-freezes it and ships a new final delta before
  it flips the placement (scale-out.md §5.7).
- moved (persisted in LMDB `meta`, key b"moved:" + name): the tenant lives on `node` at
  `epoch`; its reads and writes here raise TenantMoved naming that node. Survives restarts,
  and also the local drop of the tenant's data (`drop_moved`), so stale clients keep being
  redirected.
- pinned (persisted, key b"pin:" + name -> u64 seq): the snapshotter never trims the
  operation log past the lowest pin, so a delta export after (pin, now] always finds its ops.

Every method that changes state must be called with the database's writer lock held.
"""

from __future__ import annotations

import contextlib
import json
import struct
import threading
from collections.abc import Iterator
from typing import Any

from curator.errors import TenantMoved, TenantMoving
from curator.storage.store import Store

__all__ = ["Handoff", "log_pins"]

_MOVED = b"moved:"
_PIN = b"pin:"
_U64 = struct.Struct(">Q")


def log_pins(store: Store, txn: Any) -> list[int]:
    """Every persisted move pin (read inside the snapshotter's trim transaction)."""
    return [_U64.unpack(v)[0] for k, v in store.scan_raw(txn, "meta") if k.startswith(_PIN)]


class Handoff:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.frozen: set[str] = set()
        self.moved: dict[str, tuple[str, int]] = {}
        self._bypass = threading.local()
        with store.read() as txn:
            for k, v in store.scan_raw(txn, "meta"):
                if k.startswith(_MOVED):
                    d = json.loads(v)
                    self.moved[k[len(_MOVED) :].decode()] = (str(d["node"]), int(d["epoch"]))

    # -- checks (the data path: one set / dict lookup each) ---------------------------------
    def check_write(self, *names: str | None) -> None:
        """TenantMoved / TenantMoving if any named tenant may not be written here."""
        for name in names:
            if not isinstance(name, str) or name in getattr(self._bypass, "names", ()):
                continue
            self.check_read(name)
            if name in self.frozen:
                raise TenantMoving(
                    f"expected a writable tenant, got {name!r} frozen for a move to another "
                    "node; retry after refreshing its placement",
                    tenant=name,
                )

    def check_read(self, *names: str | None) -> None:
        for name in names:
            if not isinstance(name, str) or name in getattr(self._bypass, "names", ()):
                continue
            hit = self.moved.get(name)
            if hit is not None:
                raise TenantMoved(
                    f"expected a tenant homed here, got {name!r} moved to node {hit[0]!r} "
                    f"(epoch {hit[1]})",
                    tenant=name,
                    node=hit[0],
                    epoch=hit[1],
                )

    @contextlib.contextmanager
    def bypass(self, name: str) -> Iterator[None]:
        """Let this thread's writes of `name` through (the node's own import and drop)."""
        before = getattr(self._bypass, "names", ())
        self._bypass.names = (*before, name)
        try:
            yield
        finally:
            self._bypass.names = before

    # -- changes (writer lock held) ---------------------------------------------------------
    def freeze(self, name: str) -> None:
        self.check_read(name)
        self.frozen.add(name)

    def unfreeze(self, name: str) -> None:
        self.frozen.discard(name)

    def mark_moved(self, name: str, node: str, epoch: int) -> None:
        value = json.dumps({"node": node, "epoch": epoch}).encode()
        self.store.write(lambda txn: self.store.put_raw(txn, "meta", _MOVED + name.encode(), value))
        self.moved[name] = (node, epoch)
        self.frozen.discard(name)

    def clear_moved(self, name: str) -> None:
        if name in self.moved:
            self.store.write(lambda txn: self.store.delete_raw(txn, "meta", _MOVED + name.encode()))
            del self.moved[name]

    def pin(self, name: str, seq: int) -> None:
        """Keep the log after `seq` for `name`'s move (replaces its previous pin)."""
        self.store.write(
            lambda txn: self.store.put_raw(txn, "meta", _PIN + name.encode(), _U64.pack(seq))
        )

    def unpin(self, name: str) -> None:
        self.store.write(lambda txn: self.store.delete_raw(txn, "meta", _PIN + name.encode()))
