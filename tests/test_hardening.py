"""Regression tests of the hardening issue (#10): nothing a request, a race between an admin
call and a write, or a second process does may make the database unopenable or cross a tenant
boundary. Each test names the item it covers; each fails on 892e18d."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator.config import DatabaseConfig, IndexConfig
from curator.database import Database
from curator.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from curator.storage.store import Store

DIM = 8


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _open(path: Path) -> Database:
    return Database(DatabaseConfig(data_dir=str(path)), background=False)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = _open(tmp_path)
    for t in ("a", "b"):
        d.create_tenant(t)
    d.create_collection("c", DIM, "cosine", IndexConfig(train_min_vectors=200, max_sl_size=16))
    yield d
    d.close()


def _reopen(db: Database, snapshot: bool = False) -> Database:
    db.close(snapshot=snapshot)
    return _open(db.path)


# -- item 1: poison vectors ---------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_poison_vector_is_refused_before_commit_and_the_database_reopens(
    tmp_path: Path, metric: str
) -> None:
    db = _open(tmp_path)
    db.create_tenant("a")
    db.create_collection("c", DIM, metric)
    db.upsert("c", [1], _vecs(1), tenant="a")
    seq = db.server_info().seq
    for bad in (np.full((1, DIM), 1e20, np.float32), np.full((1, DIM), 3e19, np.float32)):
        with pytest.raises(InvalidArgument, match="squared norm"):
            db.upsert("c", [2], bad, tenant="a")
        with pytest.raises(InvalidArgument, match="squared norm"):
            db.search("c", bad, 1, tenant="a")
    assert db.server_info().seq == seq  # nothing was committed
    db = _reopen(db)
    assert db.count("c") == 1
    db.close()


def test_cache_embedding_with_huge_components_is_not_zeroed(db: Database) -> None:
    emb = np.full(16, 1e20, np.float32)  # its float32 norm overflows; float64 does not
    db.cache_store("big prompt", emb, "answer", tenant="a", model="m")
    hit = db.cache_lookup("other words", emb, tenant="a", model="m")
    assert hit.hit and hit.similarity == pytest.approx(1.0, abs=1e-5)


def test_startup_quarantines_rows_it_cannot_apply(db: Database) -> None:
    """Defence in depth: a stored row the index cannot take never stops start-up."""
    db.upsert("c", np.arange(20), _vecs(20), tenant="a")
    cid = db._collection("c").info.id
    aid = db.catalog.tenant("a").id

    def plant(txn: Any) -> None:  # what an older bug or a bad disk could have left behind,
        # logged like a real write (the replay path reads the log)
        db.store.put_vectors(txn, cid, aid, np.array([100], np.uint64), _poison(), None)
        db.store.log_op(txn, 1, cid, aid, np.array([100], np.uint64))
        db.store.put_vectors(txn, cid, 999, np.array([7], np.uint64), _vecs(1), None)
        db.store.log_op(txn, 1, cid, 999, np.array([7], np.uint64))
        db.store.set_access(txn, cid, aid, np.array([1], np.uint64), 998, True)
        db.store.log_op(txn, 3, cid, aid, np.array([1], np.uint64), 998)

    db.store.write(plant)
    for snapshot in (False, True):  # the rebuild path, then the replay path
        if snapshot:
            db.snapshot("c")
            db.store.write(plant)
        db = _reopen(db)
        info = db.describe_collection("c")
        assert info.quarantined == 2 and db.quarantined() == 2
        assert db.count("c") == 20 and db.count("c", tenant="a") == 20
        db._collection("c").index.check_invariants()
        db = _reopen(db)  # moved aside: the next start is clean
        assert db.describe_collection("c").quarantined == 0 and db.count("c") == 20
    with db.store.read() as txn:
        assert sum(1 for _ in db.store.scan_raw(txn, "quarantine")) >= 3
    db.close()


def test_quarantined_rows_are_a_metric() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from server.metrics import CollectionSizes

    registry = CollectorRegistry()
    registry.register(CollectionSizes(lambda: {"c": (20, 1, 2)}))
    page = generate_latest(registry).decode()
    assert 'curator_collection_quarantined_rows{collection="c"} 2.0' in page


def _poison() -> np.ndarray:
    return np.full((1, DIM), np.inf, np.float32)


# -- item 2: drops racing writes --------------------------------------------------------------
def _race(db: Database, write: Callable[[], Any], admin: Callable[[], Any]) -> list[Any]:
    """Hold the writer lock, start `write` (it resolves nothing before the lock), run the
    admin call, release: the write must see the admin call's result."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(write())
        except Exception as e:
            out.append(e)

    with db._write_lock:
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)  # the writer is now waiting for the lock
        admin()
    t.join(10)
    return out


def test_upsert_racing_drop_tenant_is_refused_and_the_name_reused_reads_nothing(
    db: Database,
) -> None:
    x = _vecs(1)
    out = _race(
        db,
        lambda: db.upsert("c", [7], x, documents=["old b's secret"], tenant="b"),
        lambda: db.drop_tenant("b"),
    )
    assert isinstance(out[0], NotFound)  # never acknowledged
    db.create_tenant("b")
    assert db.get("c", [7], tenant="b").ids.tolist() == []
    assert not db.search("c", x, 3, tenant="b").found.any()
    db = _reopen(db)  # and the database opens (892e18d: KeyError)
    assert db.count("c") == 0 and db.describe_collection("c").quarantined == 0
    db.close()


def test_upsert_racing_drop_collection_leaves_no_orphan(db: Database) -> None:
    cid = db._collection("c").info.id
    out = _race(
        db, lambda: db.upsert("c", [7], _vecs(1), tenant="a"), lambda: db.drop_collection("c")
    )
    assert isinstance(out[0], NotFound)
    with db.store.read() as txn:
        assert db.store.count_prefix(txn, "vectors", cid) == 0


def test_grant_racing_drop_of_the_grantee_is_refused(db: Database) -> None:
    db.upsert("c", np.arange(5), _vecs(5), tenant="a")
    db.allow_sharing("a", "b")
    out = _race(db, lambda: db.grant("c", [1, 2], "b", tenant="a"), lambda: db.drop_tenant("b"))
    assert isinstance(out[0], NotFound)
    db.create_tenant("b")
    assert db.count("c", tenant="b") == 0
    db = _reopen(db)
    assert db.count("c", tenant="b") == 0 and db.count("c") == 5
    db.close()


def test_issue_key_racing_drop_tenant_issues_nothing(db: Database) -> None:
    out = _race(db, lambda: db.issue_key("b"), lambda: db.drop_tenant("b"))
    assert isinstance(out[0], NotFound)
    assert [k for k in db.keys.list_keys() if k.tenant == "b"] == []


def test_cache_store_racing_drop_tenant_leaves_nothing_for_a_new_tenant_of_the_name(
    db: Database,
) -> None:
    emb = _vecs(1)[0]
    out = _race(
        db,
        lambda: db.cache_store("p", emb, "secret", tenant="b", model="m"),
        lambda: db.drop_tenant("b"),
    )
    assert isinstance(out[0], NotFound)
    db.cache_store("q", emb, "old", tenant="a", model="m")
    db.create_tenant("b")
    assert not db.cache_lookup("q", emb, tenant="b", model="m").hit
    assert db.cache_stats(tenant="b").entries == 0
    db = _reopen(db)
    assert not db.cache_lookup("p", emb, tenant="b", model="m").hit
    db.close()


def test_dropped_tenants_cache_policies_are_not_inherited(db: Database) -> None:
    db.cache_set_policy("mine", tenant="b", threshold=0.99)
    db.drop_tenant("b")
    db.create_tenant("b")
    assert "mine" not in db.cache_policies(tenant="b")


def test_snapshot_racing_drop_collection_writes_nothing(db: Database) -> None:
    db.upsert("c", np.arange(5), _vecs(5), tenant="a")
    c = db._collection("c")
    out = _race(db, lambda: db._snapshots.take(c), lambda: db.drop_collection("c"))
    assert not isinstance(out[0], Exception)
    assert list((db.path / "snapshots").glob(f"{c.info.id}-*")) == []
    with db.store.read() as txn:
        assert db.store.get_json(txn, "snapshots", str(c.info.id)) is None


@pytest.mark.timeout(120)
def test_soak_drops_racing_writes_then_reopen(db: Database) -> None:
    """Writers upsert, grant and cache while tenants are dropped and re-created, for a
    bounded time; afterwards the database opens and every stored row has a live owner."""
    db.allow_sharing("a", "b")
    stop = time.monotonic() + 3.0
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop:
            t = "ab"[int(rng.integers(2))]
            try:
                ids = rng.integers(0, 50, 5)
                db.upsert("c", np.unique(ids), _vecs(len(np.unique(ids)), seed), tenant=t)
                db.grant("c", np.unique(ids)[:2], "b", tenant="a")
                db.cache_store(f"p{seed}", _vecs(1, seed)[0], "r", tenant=t, model="m")
            except NotFound:
                pass  # the tenant was dropped meanwhile: refused, never acknowledged
            except BaseException as e:
                errors.append(e)

    def dropper() -> None:
        while time.monotonic() < stop:
            for t in ("a", "b"):
                try:
                    db.drop_tenant(t)
                except NotFound:
                    pass
                db.create_tenant(t)
                db.allow_sharing("a", "b")
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    threads.append(threading.Thread(target=dropper))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    db = _reopen(db)
    assert db.describe_collection("c").quarantined == 0
    db._collection("c").index.check_invariants()
    live = db.catalog.ids()
    with db.store.read() as txn:
        owners = {o for o, _, _ in db.store.scan_vectors(txn, db._collection("c").info.id, DIM)}
    assert owners <= live
    db.close()


# -- item 3: one writer per data directory -------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder(db: Database) -> None:
    db.upsert("c", [1], _vecs(1), tenant="a")
    code = (
        "import sys; from curator.config import DatabaseConfig; from curator.database import "
        "Database; from curator.errors import FailedPrecondition\n"
        f"cfg = DatabaseConfig(data_dir={str(db.path)!r})\n"
        "try:\n    Database(cfg, background=False)\n"
        "except FailedPrecondition as e:\n    print('refused:', e)\n"
        "ro = Database(cfg, readonly=True, background=False)\n"
        "print('count', ro.count('c')); ro.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"in use by process {os.getpid()}" in out  # the second writer names the holder
    assert "count 1" in out  # a read-only open stays possible


def test_the_lock_is_released_on_close(tmp_path: Path) -> None:
    _open(tmp_path).close()
    _open(tmp_path).close()


# -- items 7, 8, 9: per-owner ids, grants, side channels ----------------------------------------
def test_two_tenants_may_use_the_same_id(db: Database) -> None:
    x = _vecs(2)
    db.upsert("c", [7], x[:1], documents=["a's"], tenant="a")
    db.upsert("c", [7], x[1:], documents=["b's"], tenant="b")
    assert db.get("c", [7], tenant="a").documents == ["a's"]
    assert db.get("c", [7], tenant="b").documents == ["b's"]
    res = db.search("c", x, 1, tenant=["a", "b"], with_documents=True)
    assert res.owners == [["a"], ["b"]] and res.documents == [["a's"], ["b's"]]
    db.delete("c", [7], tenant="a")
    assert db.get("c", [7], tenant="b").documents == ["b's"] and db.count("c") == 1


def test_grant_to_unknown_and_to_not_allowed_answer_the_same(db: Database) -> None:
    db.upsert("c", [1], _vecs(1), tenant="a")
    msgs = []
    for target in ("b", "nobody"):
        with pytest.raises(NotFound) as e:
            db.grant("c", [1], target, tenant="a")
        msgs.append(str(e.value).replace(repr(target), "T"))
    assert msgs[0] == msgs[1]
    db.grant("c", [1], "b", owner="a")  # the admin grants freely
    assert db.count("c", tenant="b") == 1


def test_naming_another_owner_does_not_reveal_whether_it_exists(db: Database) -> None:
    db.upsert("c", [1], _vecs(1), tenant="b")
    answers = []
    for other in ("b", "nobody"):  # b exists, nobody does not: the same answer
        with pytest.raises(PermissionDenied) as denied:
            db.delete("c", [1], tenant="a", owner=other)
        with pytest.raises(NotFound) as dropped:  # a grantee "dropping" a share it never had
            db.revoke("c", [1], "a", tenant="a", owner=other)
        with pytest.raises(PermissionDenied) as granted:
            db.grant("c", [1], "a", tenant="a", owner=other)
        answers.append((str(denied.value), str(dropped.value), str(granted.value)))
    assert answers[0] == answers[1]
    assert db.get("c", [1], tenant="a", owner="b").ids.tolist() == []  # and no read either


def test_noop_grants_and_revokes_consume_no_seq(db: Database) -> None:
    db.upsert("c", [1, 2], _vecs(2), tenant="a")
    db.allow_sharing("a", "b")
    db.grant("c", [1], "b", tenant="a")
    seq = db.server_info().seq
    assert db.grant("c", [1], "b", tenant="a").count == 0
    assert db.revoke("c", [2], "b", tenant="a").count == 0
    assert db.server_info().seq == seq


def test_tenant_seq_counts_only_its_own_writes(db: Database) -> None:
    first = db.upsert("c", [1], _vecs(1), tenant="a")
    for i in range(5):
        db.upsert("c", [i], _vecs(1, i), tenant="b")
    second = db.upsert("c", [2], _vecs(1), tenant="a")
    assert (first.tenant_seq, second.tenant_seq) == (1, 2)
    assert second.seq == 7 and db.tenant_seq("a") == 2


# -- item 10: bad input that got INTERNAL or changed state -------------------------------------
@pytest.mark.parametrize(
    "name",
    ["\U0001f600" * 40, "a b", "tab\there", "bell\x07", "", "x" * 129, "zero\u200bwidth"],
)
def test_names_follow_one_rule(db: Database, name: str) -> None:
    with pytest.raises(InvalidArgument):
        db.create_tenant(name)
    with pytest.raises(InvalidArgument):
        db.create_collection(name, 4)
    with pytest.raises(InvalidArgument):
        db.cache_set_policy(name, tenant="a", threshold=0.9)
    with pytest.raises(InvalidArgument):
        db.cache_reset_policy(name, tenant="a")
    assert db.list_tenants() == ["a", "b"]


def test_names_of_other_scripts_within_the_byte_limit_are_fine(db: Database) -> None:
    db.create_tenant("Zürich-ä")
    db.create_tenant("\u6771\u4eac" * 21)  # 126 bytes of UTF-8
    assert "Zürich-ä" in db.list_tenants()


def test_deeply_nested_document_is_refused(db: Database) -> None:
    doc: Any = []
    for _ in range(100_000):
        doc = [doc]
    with pytest.raises(InvalidArgument, match="nested"):
        db.upsert("c", [1], _vecs(1), documents=[doc], tenant="a")
    assert db.count("c") == 0


def test_ids_at_the_top_of_uint64_come_back_intact(db: Database) -> None:
    ids = np.array([2**64 - 2, 2**63 + 5, 3], np.uint64)
    x = _vecs(3)
    db.upsert("c", ids, x, tenant="a")
    res = db.search("c", x, 1, tenant="a")
    assert res.ids[:, 0].tolist() == ids.tolist()
    assert db.get("c", ids, tenant="a").ids.tolist() == ids.tolist()
    with pytest.raises(InvalidArgument):
        db.upsert("c", [-1], x[:1], tenant="a")


def test_store_format_1_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "lmdb")
    store.write(lambda txn: txn.put(b"format_version", (1).to_bytes(4, "big"), db=store.db["meta"]))
    store.close()
    with pytest.raises(FailedPrecondition, match="scopes them per owner"):
        _open(tmp_path)
    _open(tmp_path / "other").close()  # and the failed open released its lock
    with pytest.raises(FailedPrecondition):  # still refused, not locked
        _open(tmp_path)


# -- item 12: bookkeeping read while other threads change it -----------------------------------
@pytest.mark.timeout(60)
def test_key_listing_while_keys_are_issued_and_revoked(db: Database) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        try:
            while not stop.is_set():
                key_id, _ = db.issue_key("a")
                db.keys.revoke(key_id)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(300):
            db.keys.list_keys()
            db.keys.has_admin()
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    assert [k for k in db.keys.list_keys() if k.tenant == "a"] == []
