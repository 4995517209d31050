"""Applying a tenant bundle (curator/storage/bundle.py) to a Database, idempotently.

Everything in the bundle is checked first (`plan`): names, ids, global tenant ids against
the target's catalog, dims, metrics, dtypes, finite non-zero vectors, documents, grants,
key digests, cache entries. A bundle that fails any check raises InvalidArgument (or
FailedPrecondition when it contradicts the target, e.g. a tenant name held by another id)
and changes nothing. Then `apply` re-inserts the rows through the Database's own write
methods (each one durable transaction, logged, quota-checked, put into the target's own
tree). The apply is not one transaction: a crash part-way leaves a prefix, and applying the
same bundle again converges to the same state (a base bundle replaces the tenant's rows, a
delta replaces the rows of the ids it names; grants and keys are replaced as a whole).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from curator.cache.policy import CategoryPolicy, check_category
from curator.config import IndexConfig, Metric
from curator.errors import CuratorError, FailedPrecondition, InvalidArgument
from curator.results import KeyInfo
from curator.storage import bundle_codec, quota
from curator.storage import documents as docs_codec
from curator.storage.store import OP_UPSERT
from curator.validation import check_name, prepare_vectors

if TYPE_CHECKING:
    from curator.database import Database

__all__ = ["Plan", "apply", "plan"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_COLLECTIONS = 4096


@dataclasses.dataclass
class _Coll:
    name: str
    dim: int
    metric: Metric
    config: IndexConfig
    ids: np.ndarray
    vectors: np.ndarray
    docs: list[Any]
    deleted: np.ndarray
    grants: set[tuple[int, int]]


@dataclasses.dataclass
class Plan:
    """A checked bundle, ready to apply."""

    full: bool
    name: str
    tid: int
    seq: int
    share_with: list[int]
    tenants: dict[int, str]  # other tenants it names (grantees, share list) by global id
    colls: list[_Coll]
    keys: dict[str, KeyInfo]
    cache: list[tuple[dict[str, Any], np.ndarray, bytes]]
    upto_seq: int
    policies: dict[str, CategoryPolicy]
    examples: dict[str, tuple[np.ndarray, int]]


def plan(db: Database, data: bytes, max_bytes: int) -> Plan:
    """Check a bundle against `db`; changes nothing."""
    h, arrays = bundle_codec.unpack(data, max_bytes)
    if h.get("kind") != "tenant":
        raise InvalidArgument(f"expected a tenant bundle, got kind {h.get('kind')!r:.40}")
    since, upto = _int(h, "since_seq", 2**63), _int(h, "upto_seq", 2**63)
    t = h.get("tenant")
    if not isinstance(t, dict):
        raise InvalidArgument("expected a 'tenant' record in the bundle")
    name, tid = check_name(t.get("name"), "tenant"), _tid(t.get("id"))
    tenants = _tenants(h.get("tenants"), tid)
    share = t.get("share_with")
    if not isinstance(share, list) or any(_tid(s) not in tenants for s in share):
        raise InvalidArgument("expected share_with to list tenants named in the bundle")
    for other_id, other in [(tid, name), *tenants.items()]:
        _check_free(db, other, other_id)
    raw_colls = h.get("collections")
    if not isinstance(raw_colls, list) or len(raw_colls) > _MAX_COLLECTIONS:
        raise InvalidArgument(f"expected a list of at most {_MAX_COLLECTIONS} collections")
    colls = [_coll(db, c, i, arrays, tid, tenants, since == 0) for i, c in enumerate(raw_colls)]
    if len({c.name for c in colls}) != len(colls):
        raise InvalidArgument("expected each collection once in the bundle, got a repeat")
    return Plan(
        full=since == 0,
        name=name,
        tid=tid,
        seq=_int(t, "seq", 2**63),
        share_with=[int(s) for s in share],
        tenants=tenants,
        colls=colls,
        keys=_keys(h.get("keys"), name),
        cache=_cache(h.get("cache"), arrays) if since == 0 else [],
        upto_seq=upto,
        policies=_policies(h.get("cache_policies")),
        examples=_examples(h.get("cache_examples"), arrays),
    )


def apply(db: Database, p: Plan) -> dict[str, int]:
    """Apply a checked bundle; returns counts of what changed. The tenant may be frozen
    here (a target holding it until activation): the import's own writes pass."""
    with db._handoff.bypass(p.name):
        return _apply(db, p)


def _apply(db: Database, p: Plan) -> dict[str, int]:
    out = {"upserted": 0, "deleted": 0, "grants": 0, "keys": 0, "cache": 0, "cache_skipped": 0}
    with db._write_lock:
        db._handoff.clear_moved(p.name)  # it is coming (back) here
        for other_id, other in [*p.tenants.items(), (p.tid, p.name)]:
            if not db.has_tenant(other):  # a grantee may have moved away: still a grantee
                with db._handoff.bypass(other):
                    db.create_tenant(other, tenant_id=other_id)
        _set_record(db, p.name, share_with=frozenset(p.share_with))
    batch = db.config.max_batch
    for c in p.colls:
        if c.name not in db.list_collections():
            db.create_collection(c.name, c.dim, c.metric, c.config)
        if p.full:
            gone = np.setdiff1d(_owner_ids(db, c.name, p.tid), c.ids)
        else:  # a delta names its tombstones: no scan of the tenant's rows
            gone = c.deleted[_present(db, c.name, p.tid, c.deleted)]
        for at in range(0, len(gone), batch):
            out["deleted"] += db.delete(c.name, gone[at : at + batch], owner=p.name).count
        todo = _changed(db, c, p.tid)
        for at in range(0, len(todo), batch):
            part = todo[at : at + batch]
            out["upserted"] += _upsert(
                db, c.name, p.name, c.ids[part], c.vectors[part], [c.docs[i] for i in part]
            )
        out["grants"] += _replace_grants(db, c.name, p, c.grants)
    if p.full:  # collections the bundle does not name hold nothing of the tenant
        for cname in set(db.list_collections()) - {c.name for c in p.colls}:
            ids = _owner_ids(db, cname, p.tid)
            for at in range(0, len(ids), batch):
                out["deleted"] += db.delete(cname, ids[at : at + batch], owner=p.name).count
    out["keys"] = db.keys.replace_tenant(p.name, p.keys)
    with db._write_lock:  # before the entries: they may name the tenant's own categories
        db.cache.categories.replace_tenant(f"#{p.tid}", p.policies, p.examples)
    for meta, emb, resp in p.cache:
        try:
            db.cache_store(
                meta["prompt"],
                emb,
                resp,
                tenant=p.name,
                model=meta["model"],
                fingerprint=meta["fingerprint"],
                category=meta["category"],
                ttl_s=meta["ttl_s"],
                latency_s=meta["latency_s"],
                tokens=meta["tokens"],
            )
            out["cache"] += 1
        except CuratorError:  # e.g. a category only the source's policies defined
            out["cache_skipped"] += 1
    with db._write_lock:  # the tenant's counter never goes back across a move
        rec = db.catalog.tenant(p.name)
        if rec.seq < p.seq:
            _set_record(db, p.name, seq=p.seq)
    return out


# -- applying ---------------------------------------------------------------------------------
def _upsert(
    db: Database, collection: str, name: str, ids: np.ndarray, x: np.ndarray,
    docs: list[bytes | None],
) -> int:  # fmt: skip
    """Database.upsert of rows checked by `plan`, keeping their exact bytes: a cosine
    collection's vectors are unit already, and normalising them again may change the last
    bit of a component (the source's bytes must arrive unchanged)."""
    with db._write_lock:
        db._handoff.check_write(name)
        c = db._collection(collection)
        rec = db.catalog.tenant(name)
        has = c.index.has_tenant(rec.id)
        replaced = ids[c.index.contains(ids, owner=rec.id)] if has else ids[:0]
        payload = x.nbytes + sum(len(d or b"") for d in docs)

        def txn_fn(txn: Any) -> tuple[int, Any]:
            limit = db.config.tenant_max_bytes
            quota.charge_upsert(db.store, txn, c.info.id, rec.id, name, replaced, payload, limit)
            db.store.delete_vectors(txn, c.info.id, rec.id, replaced)
            db.store.put_vectors(txn, c.info.id, rec.id, ids, x, docs)
            seq = db.store.log_op(txn, OP_UPSERT, c.info.id, rec.id, ids)
            return seq, db.catalog.bump(txn, rec)

        seq, new = db.store.write(txn_fn, payload + 64 * len(ids))
        db.catalog.apply(new)
        with c.lock.write_lock():
            c.index.insert_prepared(ids, x, rec.id)
            c.note_write(seq)
    db._after_write(c)
    return len(ids)


def _set_record(db: Database, name: str, **change: Any) -> None:
    old = db.catalog.tenant(name)
    new = dataclasses.replace(old, **change)
    if new == old:  # a repeated import writes nothing
        return
    db.store.write(lambda txn: db.catalog.put(txn, new))
    db.catalog.apply(new)


def _changed(db: Database, c: _Coll, tid: int) -> np.ndarray:
    """Positions of the bundle's rows that differ from what the target stores (a repeated
    import rewrites nothing)."""
    cid = db._collection(c.name).info.id
    with db.store.read() as txn:
        found, x = db.store.get_vectors(txn, cid, tid, c.ids, c.dim)
        docs = db.store.get_documents(txn, cid, np.full(len(c.ids), tid), c.ids)
    same = (
        found
        & (x == c.vectors).all(axis=1)
        & np.array([a == b for a, b in zip(docs, c.docs, strict=True)], bool)
    )
    return np.flatnonzero(~same)


def _present(db: Database, collection: str, tid: int, ids: np.ndarray) -> np.ndarray:
    """Which of `ids` the tenant holds in the collection here (bool mask)."""
    c = db._collection(collection)
    with c.lock.read_lock():
        if not len(ids) or not c.index.has_tenant(tid):
            return np.zeros(len(ids), bool)
        found: np.ndarray = c.index.contains(ids, owner=tid)
        return found


def _owner_ids(db: Database, collection: str, tid: int) -> np.ndarray:
    c = db._collection(collection)
    with db.store.read() as txn:
        keys = [k for k, _ in db.store.scan_owner(txn, "vectors", c.info.id, tid)]
    return np.array([int.from_bytes(k[8:16], "big") for k in keys], np.uint64)


def _replace_grants(db: Database, collection: str, p: Plan, want: set[tuple[int, int]]) -> int:
    c = db._collection(collection)
    with db.store.read() as txn:
        rows = [k for k, _ in db.store.scan_owner(txn, "access", c.info.id, p.tid)]
    have = {(int.from_bytes(k[8:16], "big"), int.from_bytes(k[16:20], "big")) for k in rows}
    n = 0
    for pairs, granted in ((have - want, False), (want - have, True)):
        by_to: dict[int, list[int]] = {}
        for vid, to in pairs:
            by_to.setdefault(to, []).append(vid)
        for to, vids in sorted(by_to.items()):
            call = db.grant if granted else db.revoke
            n += call(collection, np.array(vids, np.uint64), p.tenants[to], owner=p.name).count
    return n


# -- checks -----------------------------------------------------------------------------------
def _int(d: dict[str, Any], key: str, hi: int) -> int:
    v = d.get(key)
    if type(v) is not int or not 0 <= v < hi:
        raise InvalidArgument(f"expected {key} an integer in [0, {hi}), got {v!r:.40}")
    return v


def _tid(v: Any) -> int:
    if isinstance(v, str) and v.isdigit() and len(v) <= 10:
        v = int(v)
    if type(v) is not int or not 0 < v < 2**32:
        raise InvalidArgument(f"expected a tenant id in [1, 2**32), got {v!r:.40}")
    return v


def _tenants(raw: Any, tid: int) -> dict[int, str]:
    if not isinstance(raw, dict):
        raise InvalidArgument("expected a 'tenants' map of id -> name in the bundle")
    out = {_tid(k): check_name(v, "tenant") for k, v in raw.items()}
    if tid in out or len(set(out.values())) != len(out):
        raise InvalidArgument("expected distinct other tenants in the bundle's 'tenants' map")
    return out


def _check_free(db: Database, name: str, tid: int) -> None:
    """The target must know `name` under `tid`, or neither of them."""
    by_name, by_id = db.catalog.get(name), db.catalog.by_id(tid)
    if (by_name is not None and by_name.id != tid) or (by_id is not None and by_id.name != name):
        raise FailedPrecondition(
            f"expected tenant {name!r} to have global id {tid} here too, got a conflict "
            f"(here: {name!r} -> {by_name.id if by_name else None}, id {tid} -> "
            f"{by_id.name if by_id else None!r})"
        )


def _coll(
    db: Database,
    c: Any,
    i: int,
    arrays: dict[str, np.ndarray],
    tid: int,
    tenants: dict[int, str],
    full: bool,
) -> _Coll:
    if not isinstance(c, dict):
        raise InvalidArgument(f"expected collection {i} as an object")
    name = check_name(c.get("name"), "collection")
    dim = c.get("dim")
    if type(dim) is not int or not 1 <= dim <= 65536:
        raise InvalidArgument(f"expected dim of {name!r} in [1, 65536], got {dim!r:.40}")
    metric_name, raw_config = c.get("metric"), c.get("config")
    if not isinstance(metric_name, str) or not isinstance(raw_config, dict):
        raise InvalidArgument(f"expected a metric name and a config object for {name!r}")
    metric = Metric.parse(metric_name)
    try:
        config = IndexConfig(**raw_config)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"expected a valid index config for {name!r}, got {e}") from None
    if name in db.list_collections():
        have = db.describe_collection(name)
        if have.dim != dim or have.metric != metric.value:
            raise FailedPrecondition(
                f"expected collection {name!r} here with dim {dim} and {metric.value}, got "
                f"dim {have.dim} and {have.metric}"
            )

    def arr(key: str, dtype: str, ndim: int) -> np.ndarray:
        a = arrays.get(f"c{i}.{key}")
        if a is None or a.dtype.str != dtype or a.ndim != ndim:
            raise InvalidArgument(f"expected array c{i}.{key} of {dtype}, {ndim}-d in the bundle")
        return a

    ids, vectors = arr("ids", "<u8", 1), arr("vectors", "<f4", 2)
    doc_len, blob, deleted = (
        arr("doc_len", "<i8", 1),
        arr("docs", "|u1", 1),
        arr("deleted", "<u8", 1),
    )
    grant_ids, grant_to = arr("grant_ids", "<u8", 1), arr("grant_to", "<u4", 1)
    n = len(ids)
    if vectors.shape != (n, dim) or len(doc_len) != n or len(grant_ids) != len(grant_to):
        raise InvalidArgument(
            f"expected {n} vectors of dim {dim}, {n} document lengths and one grantee per "
            f"grant in {name!r}, got {vectors.shape}, {len(doc_len)}, "
            f"{len(grant_ids)}/{len(grant_to)}"
        )
    if len(np.unique(ids)) != n or np.intersect1d(ids, deleted).size:
        raise InvalidArgument(f"expected distinct ids in {name!r}, got a repeat or a tombstone")
    if int(ids.max(initial=0)) >= 2**63 or int(deleted.max(initial=0)) >= 2**63:
        raise InvalidArgument(f"expected ids below 2**63 in {name!r}")
    prepare_vectors(vectors, dim, False, f"vectors of {name!r}")  # finite, bounded norms
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if metric is Metric.COSINE and n and not (np.abs(norms - 1) < 1e-3).all():
        raise InvalidArgument(f"expected unit vectors in cosine {name!r}, got a norm off 1")
    vectors = np.ascontiguousarray(vectors, np.float32)
    docs = _docs(db, name, doc_len, blob)
    grants = set(zip(grant_ids.tolist(), grant_to.tolist(), strict=True))
    if any(t not in tenants for _, t in grants):
        raise InvalidArgument(f"expected grants in {name!r} to tenants named in the bundle")
    granted = np.unique(grant_ids)
    held = np.isin(granted, ids)
    if not full and name in db.list_collections():  # or held at the target, not deleted
        held |= _present(db, name, tid, granted) & ~np.isin(granted, deleted)
    if not held.all():
        raise InvalidArgument(f"expected grants in {name!r} of ids the tenant holds")
    return _Coll(name, dim, metric, config, ids, vectors, docs, deleted, grants)


def _docs(db: Database, name: str, doc_len: np.ndarray, blob: np.ndarray) -> list[Any]:
    if (doc_len < -1).any() or int(doc_len[doc_len > 0].sum()) != len(blob):
        raise InvalidArgument(f"expected document lengths in {name!r} to cover the documents")
    limit = db.config.max_document_bytes
    out: list[Any] = []
    at, raw = 0, blob.tobytes()
    for n in doc_len.tolist():
        if n < 0:
            out.append(None)
            continue
        piece = raw[at : at + n]
        at += n
        if not 1 <= n <= limit + 1 or piece[:1] not in (b"b", b"s", b"j"):
            raise InvalidArgument(f"expected tagged documents of at most {limit} bytes in {name!r}")
        try:
            docs_codec.encode(docs_codec.decode(piece), limit)  # the rules of an upsert
        except (ValueError, RecursionError, CuratorError) as e:
            raise InvalidArgument(f"expected valid documents in {name!r}, got {e!s:.80}") from None
        out.append(piece)  # stored as they were
    return out


def _keys(raw: Any, tenant: str) -> dict[str, KeyInfo]:
    if not isinstance(raw, list):
        raise InvalidArgument("expected a list of key records in the bundle")
    out = {}
    for k in raw:
        ok = isinstance(k, dict) and isinstance(k.get("digest"), str)
        ok = ok and bool(_HEX64.fullmatch(k["digest"])) and k.get("key_id") == k["digest"][:12]
        ok = ok and isinstance(k.get("description"), str) and len(k["description"]) <= 1024
        created = k.get("created") if ok else None
        if not ok or not isinstance(created, int | float) or not math.isfinite(created):
            raise InvalidArgument(f"expected key records of a sha256 digest, got {k!r:.80}")
        out[k["digest"]] = KeyInfo(k["key_id"], tenant, k["description"], float(created))
    return out


def _policies(raw: Any) -> dict[str, CategoryPolicy]:
    if not isinstance(raw, dict):
        raise InvalidArgument("expected a map of cache policies in the bundle")
    out = {}
    for cat, d in raw.items():
        try:
            out[check_category(cat)] = CategoryPolicy.from_json(d)
        except (TypeError, ValueError, CuratorError) as e:
            raise InvalidArgument(f"expected valid cache policies, got {e!s:.80}") from None
    return out


def _examples(raw: Any, arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, int]]:
    if not isinstance(raw, list):
        raise InvalidArgument("expected a list of classifier examples in the bundle")
    out = {}
    for j, e in enumerate(raw):
        s = arrays.get(f"x{j}.sum")
        ok = isinstance(e, dict) and type(e.get("n")) is int and 0 < e["n"] < 2**31
        if not ok or s is None or s.dtype.str != "<f8" or s.ndim != 1 or not np.isfinite(s).all():
            raise InvalidArgument(f"expected classifier example sums {j} in the bundle")
        try:
            out[check_category(e.get("category"))] = (np.array(s), int(e["n"]))
        except (TypeError, ValueError, CuratorError) as err:
            raise InvalidArgument(f"expected a category name, got {err!s:.80}") from None
    return out


def _cache(raw: Any, arrays: dict[str, np.ndarray]) -> list[tuple[dict[str, Any], Any, bytes]]:
    if not isinstance(raw, list):
        raise InvalidArgument("expected a list of cache entries in the bundle")
    import time

    now, out = time.time(), []
    for j, e in enumerate(raw):
        emb, resp = arrays.get(f"k{j}.emb"), arrays.get(f"k{j}.resp")
        strs = ("prompt", "model", "fingerprint", "category")
        nums = ("expires", "latency_s")
        ok = isinstance(e, dict) and all(isinstance(e.get(s), str) for s in strs)
        ok = ok and all(isinstance(e.get(s), int | float) and math.isfinite(e[s]) for s in nums)
        ok = ok and type(e.get("tokens")) is int and emb is not None and resp is not None
        if (
            not ok
            or emb is None
            or resp is None
            or emb.dtype.str != "<f4"
            or emb.ndim != 1
            or not np.isfinite(emb).all()
        ):
            raise InvalidArgument(f"expected cache entry {j} with its embedding and response")
        if e["expires"] > now:  # an expired entry is not worth carrying over
            meta = dict(e, ttl_s=e["expires"] - now)
            out.append((meta, np.array(emb), resp.tobytes()))
    return out
