"""The Database facade: ownership, isolation, documents, tenants and collections."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from curator.config import DatabaseConfig, IndexConfig
from curator.database import Database
from curator.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)


@pytest.fixture
def db(tmp_path: Path):
    d = Database(DatabaseConfig(data_dir=str(tmp_path), max_batch=5000), background=False)
    for t in ("a", "b", "c"):
        d.create_tenant(t)
    d.create_collection("docs", 8, "cosine", IndexConfig(train_min_vectors=500, max_sl_size=16))
    yield d
    d.close()


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def test_owner_reads_writes_and_shares(db: Database) -> None:
    x = _vecs(1000)
    db.upsert("docs", np.arange(1000), x, documents=[{"n": i} for i in range(1000)], tenant="a")
    with pytest.raises(NotFound, match="may share with"):  # not allowed by the admin yet
        db.grant("docs", np.arange(10), "b", tenant="a")
    db.allow_sharing("a", "b")
    db.grant("docs", np.arange(10), "b", tenant="a")
    res = db.search("docs", x[:10], k=3, with_documents=True, tenant="b")
    assert set(res.ids[res.found].tolist()) <= set(range(10))
    assert res.ids[:, 0].tolist() == list(range(10))
    assert res.owners is not None and res.owners[0][0] == "a"
    assert res.documents is not None and res.documents[0][0] == {"n": 0}
    assert db.count("docs", tenant="b") == 10
    assert db.count("docs", tenant="c") == 0
    assert not db.search("docs", x[:2], k=3, tenant="c").found.any()  # nothing readable
    # b may read but not delete, grant or revoke a's vectors: b's ids are its own, so a
    # delete of ids 1, 2 is b's (none), and naming a's ids is refused
    assert db.delete("docs", [1, 2], tenant="b").count == 0
    with pytest.raises(PermissionDenied):
        db.delete("docs", [1, 2], tenant="b", owner="a")
    with pytest.raises(PermissionDenied):
        db.grant("docs", [1], "c", tenant="b", owner="a")
    with pytest.raises(NotFound):  # c has no id 1 of its own
        db.grant("docs", [1], "c", tenant="c")
    db.upsert("docs", [1], x[:1], tenant="b")  # b's own id 1: a different vector
    assert db.get("docs", [1], tenant="a").documents == [{"n": 1}]
    with pytest.raises(FailedPrecondition):
        db.revoke("docs", [1], "a", tenant="a")
    db.revoke("docs", np.arange(5), "b", tenant="a")
    assert db.get("docs", np.arange(10), tenant="b", owner="a").ids.tolist() == list(range(5, 10))
    assert db.get("docs", np.arange(10), tenant="c", owner="a").ids.tolist() == []


def test_search_over_several_tenants_and_vectors(db: Database) -> None:
    x = _vecs(60)
    db.upsert("docs", np.arange(30), x[:30], tenant="a")
    db.upsert("docs", np.arange(30, 60), x[30:], tenant="b")
    res = db.search("docs", x[[0, 45]], k=1, with_vectors=True, tenant=["a", "b"])
    assert res.ids[:, 0].tolist() == [0, 45]
    assert res.vectors is not None
    np.testing.assert_allclose(
        res.vectors[:, 0], x[[0, 45]] / np.linalg.norm(x[[0, 45]], axis=1, keepdims=True), rtol=1e-5
    )


def test_drop_tenant_removes_its_vectors_and_grants(db: Database) -> None:
    x = _vecs(40)
    db.create_collection("other", 8)
    db.upsert("docs", np.arange(20), x[:20], tenant="a")
    db.upsert("docs", np.arange(20, 40), x[20:], tenant="b")
    db.upsert("other", [1], x[:1], tenant="b")
    db.allow_sharing("a", "b")
    db.grant("docs", np.arange(5), "b", tenant="a")
    db.drop_tenant("b")
    assert db.count("docs") == 20 and db.count("other") == 0
    assert "b" not in db.list_tenants()
    with pytest.raises(NotFound):
        db.search("docs", x[:1], k=1, tenant="b")
    db.create_tenant("b")  # a new tenant of the same name starts empty
    assert db.count("docs", tenant="b") == 0


def test_collections_lifecycle(db: Database) -> None:
    with pytest.raises(AlreadyExists):
        db.create_collection("docs", 8)
    with pytest.raises(InvalidArgument):
        db.create_collection("x", 0)
    with pytest.raises(InvalidArgument):
        db.create_collection("x", 4, metric="hamming")
    db.upsert("docs", [1], _vecs(1), tenant="a")
    assert db.describe_collection("docs").vectors == 1
    db.drop_collection("docs")
    with pytest.raises(NotFound):
        db.count("docs")
    db.create_collection("docs", 4)
    assert db.count("docs") == 0


def test_limits(db: Database) -> None:
    with pytest.raises(ResourceExhausted):
        db.upsert("docs", np.arange(6000), _vecs(6000), tenant="a")
    with pytest.raises(ResourceExhausted):
        db.upsert("docs", [1], _vecs(1), documents=[b"x" * (2 << 20)], tenant="a")
    with pytest.raises(InvalidArgument):
        db.search("docs", _vecs(1), k=0, tenant="a")
    assert db.count("docs") == 0


@pytest.mark.timeout(60)
def test_readers_never_see_half_a_batch(db: Database) -> None:
    """Batches of 50 are written while readers count: a count is always a multiple of 50,
    and every search answers without error."""
    x = _vecs(2000, seed=3)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(db.count("docs", tenant="a"))
                res = db.search("docs", x[:4], k=5, tenant="a")
                assert (~res.found | (res.ids < 2000)).all()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(0, 2000, 50):
        db.upsert("docs", np.arange(i, i + 50), x[i : i + 50], tenant="a")
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert seen and all(n % 50 == 0 for n in seen)
    assert db.count("docs", tenant="a") == 2000


def test_a_tenant_created_with_an_explicit_id_keeps_it_and_the_counter_moves_past(
    tmp_path: Path,
) -> None:
    config = DatabaseConfig(data_dir=str(tmp_path))
    with Database(config, background=False) as d:
        d.create_tenant("placed", tenant_id=1000)
        assert d.catalog.tenant("placed").id == 1000
        with pytest.raises(AlreadyExists, match="unused tenant id"):
            d.create_tenant("other", tenant_id=1000)
        for bad in (0, -1, 2**32, True, 1.5, "7"):
            with pytest.raises(InvalidArgument, match="tenant id"):
                d.create_tenant("bad", tenant_id=bad)  # type: ignore[arg-type]
        d.create_tenant("local")
        assert d.catalog.tenant("local").id > 1000
    with Database(config, background=False) as d:
        assert d.catalog.tenant("placed").id == 1000
        d.create_tenant("after")
        assert d.catalog.tenant("after").id > d.catalog.tenant("local").id


def test_list_ids_pages_in_id_order_and_lists_only_ones_own(db: Database) -> None:
    ids = np.array([5, 2**64 - 2, 0, 77, 3, 1000], np.uint64)
    db.upsert("docs", ids, _vecs(6), tenant="a")
    db.upsert("docs", [1, 2], _vecs(2, 1), tenant="b")
    got, after, pages = [], None, 0
    while True:
        page = db.list_ids("docs", tenant="a", after=after, limit=4)
        got.extend(page.ids.tolist())
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert got == sorted(ids.tolist()) and pages == 2
    assert db.list_ids("docs", owner="b").ids.tolist() == [1, 2]  # admin names the owner
    assert db.list_ids("docs", tenant="c").ids.tolist() == []
    assert db.list_ids("docs", tenant="a", after=2**64 - 2).ids.tolist() == []
    with pytest.raises(PermissionDenied):
        db.list_ids("docs", tenant="a", owner="b")
    with pytest.raises(InvalidArgument, match="owner"):
        db.list_ids("docs")
    for bad in ({"limit": 0}, {"limit": True}, {"after": -1}, {"after": 2**64 - 1}):
        with pytest.raises(InvalidArgument):
            db.list_ids("docs", tenant="a", **bad)  # type: ignore[arg-type]
    with pytest.raises(ResourceExhausted):
        db.list_ids("docs", tenant="a", limit=10**6)
