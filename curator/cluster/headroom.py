"""How many bytes a node can still store, and whether a tenant's bundle fits (scale-out.md
§5.7 step 0: a move refuses up front rather than filling the target halfway).

The LMDB map grows on demand up to `max_map_size` (0: no cap, the disk is the limit), and
ordinary writes leave `reserve` bytes free for deletes. Used pages count whole (pages on
LMDB's free list are not subtracted): the estimate errs towards refusing.
"""

from __future__ import annotations

import shutil

from curator.database import Database
from curator.errors import FailedPrecondition

__all__ = ["FACTOR", "FLOOR", "check_fits", "headroom"]

#: An import writes the rows, their log entries and index records: room for twice the bundle,
FACTOR = 2.0
#: plus this much (the store's default reserve) for everything else the node writes meanwhile.
FLOOR = 8 << 20


def headroom(db: Database) -> int:
    """Bytes `db` can still store: min(map cap, used + free disk) - used - reserve, >= 0."""
    store = db.store
    used = store.stats()["used_bytes"]
    data = store.path / "data.mdb"
    allocated = data.stat().st_size if data.exists() else 0
    disk = shutil.disk_usage(store.path).free + max(0, allocated - used)
    room = disk
    if store.max_map_size is not None:
        room = min(room, store.max_map_size - used)
    return max(0, room - store.reserve)


def check_fits(tenant: str, node: str, bundle_bytes: int, free: int) -> None:
    """FailedPrecondition naming the numbers if a bundle of `bundle_bytes` does not fit in
    `free` bytes with the margin."""
    need = int(bundle_bytes * FACTOR) + FLOOR
    if free < need:
        raise FailedPrecondition(
            f"expected node {node} to have room for tenant {tenant!r}: its bundle is "
            f"{bundle_bytes} bytes, so {need} bytes free with the margin ({FACTOR:g}x + "
            f"{FLOOR >> 20} MiB), got {free} bytes free (map cap or disk, less used pages "
            "and the reserve)"
        )
