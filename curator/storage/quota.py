"""Per-tenant byte quotas for vectors and documents, kept in LMDB.

Each tenant's running total of stored bytes (float32 vector payload plus document bytes of the
rows it owns) is a `meta` record `tenant_bytes | tenant u32 -> u64`, changed in the same write
transaction as the rows it counts, so it is exact across crashes. An upsert that would take a
tenant past `limit` raises ResourceExhausted and the transaction applies nothing. Totals of a
database written before this record existed start at zero for the rows stored before (they are
never driven below zero).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from curator.errors import ResourceExhausted
from curator.storage.store import Store

__all__ = ["charge_upsert", "forget_tenant", "release_collection", "release_rows", "used"]

_KEY = b"tenant_bytes"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def used(store: Store, txn: Any, tenant: int) -> int:
    """Bytes of vectors and documents the tenant owns."""
    raw = store.get_raw(txn, "meta", _KEY + _U32.pack(tenant))
    return _U64.unpack(raw)[0] if raw else 0


def _set(store: Store, txn: Any, tenant: int, total: int) -> None:
    key = _KEY + _U32.pack(tenant)
    if total > 0:
        store.put_raw(txn, "meta", key, _U64.pack(total))
    else:
        store.delete_raw(txn, "meta", key)


def _release(store: Store, txn: Any, per_owner: dict[int, int]) -> None:
    for owner, n in per_owner.items():
        _set(store, txn, owner, max(0, used(store, txn, owner) - n))


def charge_upsert(
    store: Store,
    txn: Any,
    coll: int,
    tenant: int,
    name: str,
    replaced: np.ndarray,
    new_bytes: int,
    limit: int,
) -> None:
    """Before an upsert's rows are written: release the rows it replaces (owned by `tenant`),
    then charge `new_bytes`; past `limit` (0 = none) raise ResourceExhausted."""
    _release(store, txn, store.row_sizes(txn, coll, tenant, replaced) if len(replaced) else {})
    total = used(store, txn, tenant) + new_bytes
    if limit and total > limit:
        raise ResourceExhausted(
            f"expected tenant {name!r} to stay within its quota of {limit} bytes of vectors "
            f"and documents (tenant_max_bytes), got {total} bytes with this write; delete "
            "some of its data first"
        )
    _set(store, txn, tenant, total)


def release_rows(store: Store, txn: Any, coll: int, owner: int, ids: np.ndarray) -> None:
    """Before `owner`'s rows are deleted: take their bytes off its total."""
    _release(store, txn, store.row_sizes(txn, coll, owner, ids))


def release_collection(store: Store, txn: Any, coll: int) -> None:
    """Before a collection is dropped: take its rows off their owners' totals."""
    _release(store, txn, store.row_sizes(txn, coll))


def forget_tenant(store: Store, txn: Any, tenant: int) -> None:
    """A dropped tenant owns nothing."""
    _set(store, txn, tenant, 0)
