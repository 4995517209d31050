"""Tenant bundles: one tenant's state read at one LMDB read transaction, as bytes.

A base bundle (`since_seq` 0) holds everything the tenant owns: its record (global id,
write counter, sharing list), per collection its ids, vectors, documents and the grants it
gave (the vectors' "labels"), its API-key digests and its semantic-cache entries. A delta
bundle (`since_seq` > 0) holds, per collection, the current rows of the ids its upserts and
deletes in (since_seq, upto] touched (a tombstone for those gone) plus the tenant's complete
grant list, keys and record (small, and changed without a logged id, e.g. when a grantee is
dropped). Applying a bundle is idempotent (curator/storage/bundle_import.py), so a mover may
repeat any export or import.

The tenant's cache category policies and classifier example sums travel in every bundle
(small, replaced as a whole). Cache entries travel in base bundles only (the cache's writes
are not in the operation log; an entry stored during a move is a later miss at the target,
which a cache tolerates); their hit counts and creation times restart at the target, and the
threshold calibration state (feedback) is not carried.

Layout: curator/storage/bundle_codec.py. Array names: c<i>.ids (u8), c<i>.vectors (f4,
n x dim), c<i>.doc_len (i8, -1: none), c<i>.docs (u1), c<i>.deleted (u8), c<i>.grant_ids (u8),
c<i>.grant_to (u4 tenant ids), k<j>.emb (f4) and k<j>.resp (u1) per cache entry, x<j>.sum
(f8) per classifier category.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from curator.cache import entry as entry_codec
from curator.cache.classifier import CentroidClassifier
from curator.errors import FailedPrecondition, InvalidArgument, NotFound
from curator.storage import bundle_codec
from curator.storage.catalog import TenantRecord
from curator.storage.store import OP_DELETE, OP_UPSERT, Store

__all__ = ["export_tenant"]

_VKEY = struct.Struct(">IIQ")
_AKEY = struct.Struct(">IIQI")


def export_tenant(
    store: Store, name: str, since_seq: int, received_from: list[str] | None = None
) -> tuple[bytes, int]:
    """(bundle bytes, the store sequence it reflects) of tenant `name`, read in one read
    transaction. FailedPrecondition if a delta's ops were trimmed from the log (pin it).
    `received_from`: the owners whose grants the tenant holds here (recorded in the header
    for the mover's read sets; those grants stay with their owners)."""
    if type(since_seq) is not int or since_seq < 0:
        raise InvalidArgument(f"expected since_seq an integer >= 0, got {since_seq!r}")
    with store.read() as txn:
        upto = store.seq(txn)
        raw = store.get_json(txn, "tenants", name)
        if raw is None:
            raise NotFound(f"expected a known tenant, got {name!r}")
        rec = TenantRecord.from_json(name, raw)
        names = {int(d["id"]): n for n, d in store.all_json(txn, "tenants").items()}
        if since_seq > upto:
            raise InvalidArgument(f"expected since_seq at most {upto}, got {since_seq}")
        touched = None if since_seq == 0 else _touched(store, txn, rec.id, since_seq, upto)
        arrays: dict[str, np.ndarray] = {}
        colls: list[dict[str, Any]] = []
        for cname, info in sorted(store.all_json(txn, "collections").items()):
            part = _collection(store, txn, rec.id, int(info["id"]), int(info["dim"]), touched)
            if part is None:
                continue
            i = len(colls)
            colls.append(
                {
                    "name": cname,
                    "dim": info["dim"],
                    "metric": info["metric"],
                    "config": info["config"],
                }
            )
            arrays.update({f"c{i}.{k}": v for k, v in part.items()})
        keys = [
            {
                "digest": h,
                "key_id": d["key_id"],
                "description": d["description"],
                "created": d["created"],
            }
            for h, d in sorted(store.all_json(txn, "api_keys").items())
            if d.get("tenant") == name
        ]
        cache = [] if since_seq else _cache(store, txn, f"#{rec.id}", arrays)
        policies, examples = _categories(store, txn, f"#{rec.id}", arrays)
    others = set(rec.share_with)
    for i in range(len(colls)):
        others |= set(arrays[f"c{i}.grant_to"].tolist())
    others.discard(rec.id)
    header = {
        "kind": "tenant",
        "since_seq": since_seq,
        "upto_seq": upto,
        "tenant": {
            "name": name,
            "id": rec.id,
            "seq": rec.seq,
            "share_with": sorted(rec.share_with),
        },
        "tenants": {str(t): names[t] for t in sorted(others) if t in names},
        "collections": colls,
        "keys": keys,
        "cache": cache,
        "received_from": sorted(received_from or []),
        "cache_policies": policies,
        "cache_examples": examples,
    }
    return bundle_codec.pack(header, arrays), upto


def _touched(store: Store, txn: Any, tid: int, since: int, upto: int) -> dict[int, np.ndarray]:
    """Ids of `tid` that its upserts and deletes in (since, upto] touched, per collection."""
    first = store.first_op(txn)
    if since < upto and (first == 0 or first > since + 1):
        raise FailedPrecondition(
            f"expected the operation log to hold every op after seq {since}, got it trimmed "
            f"to start at {first or upto + 1} (the move's pin was lost: copy the tenant again)"
        )
    parts: dict[int, list[np.ndarray]] = {}
    for _, kind, coll, owner, _, ids in store.ops_after(txn, since):
        if owner == tid and kind in (OP_UPSERT, OP_DELETE):
            parts.setdefault(coll, []).append(ids)
    return {c: np.unique(np.concatenate(p)) for c, p in parts.items()}


def _collection(
    store: Store, txn: Any, tid: int, cid: int, dim: int, touched: dict[int, np.ndarray] | None
) -> dict[str, np.ndarray] | None:
    """The arrays of one collection, or None if the tenant has nothing there to ship."""
    grants = [_AKEY.unpack(k)[2:] for k, _ in store.scan_owner(txn, "access", cid, tid)]
    if touched is None:
        rows = [(_VKEY.unpack(k)[2], v) for k, v in store.scan_owner(txn, "vectors", cid, tid)]
        deleted = np.empty(0, np.uint64)
    else:
        want = touched.get(cid, np.empty(0, np.uint64))
        has_rows = next(iter(store.scan_owner(txn, "vectors", cid, tid)), None) is not None
        if not len(want) and not has_rows:
            return None
        found, x = store.get_vectors(txn, cid, tid, want, dim)
        rows = [(int(v), x[i].tobytes()) for i, v in enumerate(want.tolist()) if found[i]]
        deleted = want[~found]
    if touched is None and not rows:
        return None
    ids = np.array([r[0] for r in rows], np.uint64)
    vectors = np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(len(rows), dim)
    docs = store.get_documents(txn, cid, np.full(len(ids), tid), ids)
    doc_len = np.array([-1 if d is None else len(d) for d in docs], np.int64)
    return {
        "ids": ids,
        "vectors": vectors,
        "doc_len": doc_len,
        "docs": np.frombuffer(b"".join(d for d in docs if d is not None), np.uint8),
        "deleted": deleted.astype(np.uint64),
        "grant_ids": np.array([g[0] for g in grants], np.uint64),
        "grant_to": np.array([g[1] for g in grants], np.uint32),
    }


def _categories(
    store: Store, txn: Any, key: str, arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tenant's cache policies (category -> JSON) and classifier example sums (arrays
    x<j>.sum, float64), keys `tenant \x1f category` (store.py)."""
    prefix = (key + "\x1f").encode()
    policies = {
        k[len(prefix) :].decode(): json.loads(v)
        for k, v in store.scan_raw(txn, "cache_policies")
        if k.startswith(prefix)
    }
    examples: list[dict[str, Any]] = []
    for k, v in store.scan_raw(txn, "cache_examples"):
        if k.startswith(prefix):
            s, n = CentroidClassifier.decode(v)
            arrays[f"x{len(examples)}.sum"] = s
            examples.append({"category": k[len(prefix) :].decode(), "n": n})
    return policies, examples


def _cache(store: Store, txn: Any, key: str, arrays: dict[str, np.ndarray]) -> list[Any]:
    out: list[dict[str, Any]] = []
    for k, v in store.scan_raw(txn, "cache"):
        e = entry_codec.decode(struct.unpack(">Q", k)[0], v)
        if e.tenant != key:
            continue
        j = len(out)
        arrays[f"k{j}.emb"] = np.asarray(e.embedding, "<f4")
        arrays[f"k{j}.resp"] = np.frombuffer(e.response, np.uint8)
        out.append(
            {
                "prompt": e.prompt,
                "model": e.model,
                "fingerprint": e.fingerprint,
                "category": e.category,
                "expires": e.expires,
                "latency_s": e.latency_s,
                "tokens": e.tokens,
            }
        )
    return out
