"""What a node does for a tenant move: export, import, freeze, moved tombstones, local drop.

The Database's public methods of the same names delegate here (scale-out.md §5.7; the
move's driver is curator/cluster/mover.py). Every call is idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curator.errors import InvalidArgument
from curator.storage import bundle, bundle_import
from curator.validation import check_name

if TYPE_CHECKING:
    from curator.database import Database

__all__ = ["drop_moved", "export", "freeze", "import_bundle", "mark_moved", "unfreeze"]

MAX_BUNDLE_BYTES = 8 << 30


def export(db: Database, name: str, since_seq: int) -> tuple[bytes, int]:
    """(bundle, sequence it reflects). Pins the log first, so no later snapshot trims the
    ops the next delta needs: at the current sequence for a base copy, at `since_seq` for a
    delta (the mover only asks for deltas after what the target already applied)."""
    name = check_name(name, "tenant")
    with db._write_lock:
        db._handoff.check_read(name)
        db.catalog.tenant(name)  # NotFound before pinning anything
        if since_seq == 0:
            with db.store.read() as txn:
                db._handoff.pin(name, db.store.seq(txn))
        elif type(since_seq) is int and since_seq > 0:
            db._handoff.pin(name, since_seq)
        tid = db.catalog.tenant(name).id
        owners: set[int] = set()
        for c in db._collections.values():
            with c.lock.read_lock():
                if c.index.has_tenant(tid):
                    owners.update(int(o) for o, _ in c.index.received(tid))
        received = sorted(db.catalog.name_of(o) for o in owners if db.catalog.name_of(o))
    return bundle.export_tenant(db.store, name, since_seq, received)


def import_bundle(
    db: Database, data: bytes, tenant: str | None = None, max_bytes: int = MAX_BUNDLE_BYTES
) -> dict[str, int]:
    """Check the whole bundle (nothing changes if it is refused), then apply it. `tenant`:
    the tenant the bundle must be of (None: any)."""
    plan = bundle_import.plan(db, data, max_bytes)
    if tenant is not None and plan.name != tenant:
        raise InvalidArgument(f"expected a bundle of tenant {tenant!r}, got {plan.name!r}")
    return bundle_import.apply(db, plan)


def freeze(db: Database, name: str) -> int:
    """Refuse `name`'s writes from now on; returns the fence: the node's sequence, which no
    acknowledged write of the tenant exceeds (taken under the writer lock)."""
    name = check_name(name, "tenant")
    with db._write_lock:
        db._handoff.check_read(name)
        db.catalog.tenant(name)
        db._handoff.freeze(name)
        with db.store.read() as txn:
            return db.store.seq(txn)


def unfreeze(db: Database, name: str) -> None:
    """Serve `name`'s writes again (an aborted move); drops the move's log pin."""
    name = check_name(name, "tenant")
    with db._write_lock:
        db._handoff.unfreeze(name)
        db._handoff.unpin(name)


def mark_moved(db: Database, name: str, node: str, epoch: int) -> None:
    """Persist that `name` lives on `node` at `epoch` (TenantMoved from now on)."""
    name = check_name(name, "tenant")
    if not isinstance(node, str) or not node or len(node) > 256:
        raise InvalidArgument(f"expected a node id of 1 to 256 characters, got {node!r:.80}")
    if type(epoch) is not int or not 0 <= epoch < 2**63:
        raise InvalidArgument(f"expected an epoch integer >= 0, got {epoch!r}")
    with db._write_lock:
        db._handoff.mark_moved(name, node, epoch)
        db._handoff.unpin(name)


def drop_moved(db: Database, name: str) -> None:
    """Delete what `name` owns here (vectors, documents, the grants it gave, keys, cache
    entries and policies). Its catalog record, the grants it received from tenants still
    homed here and its moved tombstone stay: it may still be a grantee here, and stale
    clients keep being redirected. Also the target's cleanup of an aborted move."""
    name = check_name(name, "tenant")
    with db._write_lock, db._handoff.bypass(name):
        rec = db.catalog.get(name)
        if rec is not None:
            for cname in db.list_collections():
                ids = bundle_import._owner_ids(db, cname, rec.id)
                for at in range(0, len(ids), db.config.max_batch):
                    db.delete(cname, ids[at : at + db.config.max_batch], owner=name)
            db.keys.replace_tenant(name, {})
            db.cache.drop_tenant(f"#{rec.id}")
        db._handoff.unfreeze(name)
        db._handoff.unpin(name)
