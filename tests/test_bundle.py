"""Tenant bundles (curator/storage/bundle.py): byte-equal round trips, deltas, log pins, and
hostile bundles refused before anything changes."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator.config import DatabaseConfig, IndexConfig
from curator.database import Database
from curator.errors import FailedPrecondition, InvalidArgument
from curator.storage import bundle_codec

DIM = 8
CFG = IndexConfig(train_min_vectors=200, max_sl_size=16)


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _open(path: Path) -> Database:
    return Database(DatabaseConfig(data_dir=str(path)), background=False)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    src, dst = _open(tmp_path / "src"), _open(tmp_path / "dst")
    src.create_tenant("a", tenant_id=10)
    src.create_tenant("b", tenant_id=11)
    src.create_tenant("other", tenant_id=12)
    src.allow_sharing("a", "b")
    src.create_collection("c", DIM, "cosine", CFG)
    src.create_collection("d", DIM, "l2", CFG)
    docs: list[Any] = [b"\x00raw", "text \u00e9", {"k": [1, 2.5, None]}, None] * 75
    src.upsert("c", np.arange(300), _vecs(300), docs, tenant="a")
    src.upsert("d", [5, 6], _vecs(2, 1), ["x", None], tenant="a")
    src.upsert("c", [1, 2], _vecs(2, 2), tenant="other")  # same ids, another owner
    src.grant("c", np.arange(0, 300, 7), "b", tenant="a")
    src.issue_key("a", "for a")
    src.cache_set_policy("mine", tenant="a", threshold=0.97)
    src.cache_add_examples("mine", _vecs(3, 4), tenant="a")
    src.cache_store("hello", _vecs(1, 3)[0], "world", tenant="a", model="m")
    src.cache_store("own", _vecs(1, 5)[0], "cat", tenant="a", model="m", category="mine")
    yield src, dst
    src.close()
    dst.close()


def _state(db: Database, tenant: str) -> dict[str, Any]:
    """Everything of `tenant` a move must carry, read back through stored rows (keys less
    the collection id: each node numbers its collections)."""
    tid = db.catalog.tenant(tenant).id
    out: dict[str, Any] = {}
    with db.store.read() as txn:
        for name in db.list_collections():
            cid = db._collection(name).info.id
            out[name] = {
                db_: sorted((k[4:], v) for k, v in db.store.scan_owner(txn, db_, cid, tid))
                for db_ in ("vectors", "documents", "access")
            }
    out["keys"] = sorted(db.keys.tenant_digests(tenant).items())
    out["share"] = db.sharing(tenant)
    out["cache"] = sorted((e.prompt, e.response, e.category) for e in db.cache.entries(f"#{tid}"))
    with db.store.read() as txn:
        for sub in ("cache_policies", "cache_examples"):
            prefix = f"#{tid}\x1f".encode()
            out[sub] = sorted(kv for kv in db.store.scan_raw(txn, sub) if kv[0].startswith(prefix))
    return out


def test_round_trip_is_byte_equal_and_idempotent(pair: tuple[Database, Database]) -> None:
    src, dst = pair
    data, upto = src.export_tenant("a")
    assert upto == src.server_info().seq
    counts = dst.import_tenant(data)
    assert counts["upserted"] == 302 and counts["cache"] == 2 and counts["keys"] == 1
    assert _state(src, "a")["cache_examples"]  # the fixture really has some
    assert _state(dst, "a") == _state(src, "a")
    assert dst.catalog.tenant("a").id == 10 and dst.catalog.tenant("b").id == 11
    assert dst.tenant_seq("a") >= src.tenant_seq("a")
    q = _vecs(5, 9)
    want = src.search("c", q, 10, tenant="b")
    got = dst.search("c", q, 10, tenant="b")  # the grantee's sub-tree came along
    assert got.ids.tolist() == want.ids.tolist()
    assert dst.get("c", [2], tenant="a").documents == [{"k": [1, 2.5, None]}]
    seq = dst.server_info().seq
    again = dst.import_tenant(data)  # repeating an import rewrites nothing
    assert _state(dst, "a") == _state(src, "a") and again["upserted"] == again["grants"] == 0
    assert dst.server_info().seq == seq
    assert not dst.has_tenant("other")  # only the exported tenant (and its grantees) travel


def test_delta_carries_upserts_deletes_grants_and_drops(pair: tuple[Database, Database]) -> None:
    src, dst = pair
    data, base = src.export_tenant("a")
    dst.import_tenant(data)
    src.upsert("c", [1000, 3], _vecs(2, 5), ["new", None], tenant="a")
    src.delete("c", [4, 7], tenant="a")  # 7 was granted: the grant goes with it
    src.revoke("c", [14], "b", tenant="a")
    src.grant("c", [1, 2], "b", tenant="a")
    src.upsert("c", [99], _vecs(1, 6), tenant="other")  # not a's: not in a's delta
    src.issue_key("a")
    delta, upto = src.export_tenant("a", since_seq=base)
    assert upto > base and len(delta) < len(data) // 3
    counts = dst.import_tenant(delta)
    assert counts["deleted"] == 2 and counts["upserted"] == 2
    assert _state(dst, "a") == {**_state(src, "a"), "cache": _state(dst, "a")["cache"]}
    nothing, upto2 = src.export_tenant("a", since_seq=upto)
    assert upto2 == upto and dst.import_tenant(nothing)["upserted"] == 0


def test_delta_refused_when_the_log_was_trimmed_past_it(pair: tuple[Database, Database]) -> None:
    src, _ = pair
    seq = src.server_info().seq
    src.upsert("c", [2000], _vecs(1), tenant="a")
    src.snapshot("c")  # trims the log: nothing pinned it
    src.snapshot("d")
    with pytest.raises(FailedPrecondition, match="trimmed"):
        src.export_tenant("a", since_seq=seq - 1)


def test_export_pins_the_log_until_the_move_ends(pair: tuple[Database, Database]) -> None:
    src, dst = pair
    data, base = src.export_tenant("a")  # pins at base
    src.upsert("c", [3000], _vecs(1), tenant="a")
    src.snapshot("c")
    src.snapshot("d")
    src.close()  # the pin is durable
    src2 = _open(src.path)
    try:
        src2.snapshot("c")
        delta, _ = src2.export_tenant("a", since_seq=base)
        dst.import_tenant(data)
        dst.import_tenant(delta)
        assert dst.get("c", [3000], tenant="a").ids.tolist() == [3000]
        src2.unfreeze_tenant("a")  # an aborted move releases the pin
        src2.upsert("c", [3001], _vecs(1), tenant="a")
        src2.snapshot("c")
        src2.snapshot("d")
        with pytest.raises(FailedPrecondition):
            src2.export_tenant("a", since_seq=base)
    finally:
        src2.close()


# -- hostile bundles --------------------------------------------------------------------------
def _rewrite(data: bytes, change: Any) -> bytes:
    """Unpack, let `change(header, arrays)` edit, repack (digest recomputed)."""
    header, arrays = bundle_codec.unpack(data, 1 << 30)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    header.pop("arrays")
    header.pop("sha256")
    change(header, arrays)
    return bundle_codec.pack(header, arrays)


def _set(key: str, value: Any) -> Any:
    def change(h: dict[str, Any], a: dict[str, np.ndarray]) -> None:
        if key.startswith("c0."):
            a[key] = value
        else:
            h[key] = value

    return change


def _nan(h: dict[str, Any], a: dict[str, np.ndarray]) -> None:
    a["c0.vectors"][3, 1] = np.nan


def _tenant(field: str, value: Any) -> Any:
    def change(h: dict[str, Any], a: dict[str, np.ndarray]) -> None:
        h["tenant"][field] = value

    return change


def _coll(field: str, value: Any) -> Any:
    def change(h: dict[str, Any], a: dict[str, np.ndarray]) -> None:
        h["collections"][0][field] = value

    return change


def _bad_doc(h: dict[str, Any], a: dict[str, np.ndarray]) -> None:
    docs = a["c0.docs"].copy()
    docs[0] = ord("q")  # an unknown tag
    a["c0.docs"] = docs


HOSTILE = {
    "nan vector": _nan,
    "wrong dim": _set("c0.vectors", np.zeros((300, 4), np.float32)),
    "repeated id": _set("c0.ids", np.zeros(300, np.uint64)),
    "id and tombstone": _set("c0.deleted", np.array([5], np.uint64)),
    "grant of an unknown id": _set("c0.grant_ids", np.full(43, 10**6, np.uint64)),
    "grant to an unnamed tenant": _set("c0.grant_to", np.full(43, 999, np.uint32)),
    "bad doc lengths": _set("c0.doc_len", np.full(300, 5, np.int64)),
    "bad document tag": _bad_doc,
    "bad tenant name": _tenant("name", "x" * 100_000),
    "tenant id 0": _tenant("id", 0),
    "huge dim": _coll("dim", 10**9),
    "bad metric": _coll("metric", "hamming"),
    "bad config": _coll("config", {"branching": -3}),
    "config with junk": _coll("config", {"__class__": 1}),
    "bad policy": _set("cache_policies", {"mine": {"threshold": 7}}),
    "bad examples": _set("cache_examples", [{"category": "mine", "n": 0}]),
    "bad key": _set("keys", [{"digest": "zz", "key_id": "zz", "description": "", "created": 1}]),
    "kind": _set("kind", "archive"),
    "since": _set("since_seq", -1),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bundles_are_refused_and_change_nothing(
    pair: tuple[Database, Database], case: str
) -> None:
    src, dst = pair
    data, _ = src.export_tenant("a")
    bad = _rewrite(data, HOSTILE[case])
    before = (dst.server_info().seq, dst.list_tenants(), dst.list_collections())
    with pytest.raises(InvalidArgument, match="expected"):
        dst.import_tenant(bad)
    assert (dst.server_info().seq, dst.list_tenants(), dst.list_collections()) == before


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:-10],  # truncated
        lambda d: d[:5],
        lambda d: b"NOTABNDL" + d[8:],
        lambda d: d[:8] + struct.pack("<II", 1, 2**31) + d[16:],  # header length past the end
        lambda d: d[:8] + struct.pack("<I", 99) + d[12:],  # format
        lambda d: d[:16] + b"[" * 40 + d[56:],  # garbage header
        lambda d: bytes(d[:-1]) + bytes([d[-1] ^ 1]),  # one flipped bit in the arrays
    ],
)
def test_corrupt_bytes_are_refused(pair: tuple[Database, Database], mangle: Any) -> None:
    src, dst = pair
    data, _ = src.export_tenant("a")
    with pytest.raises(InvalidArgument):
        dst.import_tenant(mangle(data))
    assert dst.list_tenants() == []


def test_deeply_nested_header_is_refused(pair: tuple[Database, Database]) -> None:
    _, dst = pair
    text = ("[" * 100_000 + "]" * 100_000).encode()
    raw = b"CDBBNDL\x00" + struct.pack("<II", 1, len(text)) + text
    with pytest.raises(InvalidArgument):
        dst.import_tenant(raw)


def test_conflicting_global_ids_are_refused(pair: tuple[Database, Database]) -> None:
    src, dst = pair
    dst.create_tenant("a", tenant_id=77)  # the name under another global id
    data, _ = src.export_tenant("a")
    with pytest.raises(FailedPrecondition, match="global id"):
        dst.import_tenant(data)
    assert dst.count("c", tenant="a") == 0 if "c" in dst.list_collections() else True


def test_shape_table_lies_are_refused() -> None:
    data = bundle_codec.pack({"kind": "tenant"}, {"x": np.zeros(4, np.float32)})
    head_len = struct.unpack_from("<I", data, 12)[0]
    header = json.loads(data[16 : 16 + head_len])
    header["arrays"]["x"] = ["<f4", [10**6], 0, 4 * 10**6]
    text = json.dumps(header).encode()
    bad = data[:12] + struct.pack("<I", len(text)) + text + data[16 + head_len :]
    with pytest.raises(InvalidArgument, match="fit the bundle"):
        bundle_codec.unpack(bad, 1 << 20)
    header["arrays"]["x"] = ["|O", [4], 0, 32]
    text = json.dumps(header).encode()
    bad = data[:12] + struct.pack("<I", len(text)) + text + data[16 + head_len :]
    with pytest.raises(InvalidArgument, match="allowed dtype"):
        bundle_codec.unpack(bad, 1 << 20)
