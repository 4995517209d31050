"""Point access by id (get, grant, revoke, delete, can_read, contains) never lists a tenant's
ids or slots: every method that materialises them is made to fail while point calls run on
a trained, multi-tenant index (issue 11: a one-id `get` on a 300k tenant cost 39 ms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator import CuratorIndex
from curator.config import DatabaseConfig, IndexConfig
from curator.database import Database
from curator.index.curator_index import CuratorIndex as _Index
from curator.index.index_search import IndexSearch
from curator.index.sorted_map import SortedMap
from curator.index.tenant_tree import TenantTree

pytestmark = pytest.mark.timeout(120)

_N = 3000
_CFG = IndexConfig(train_min_vectors=1000, max_sl_size=16)

# Every method that lists all of a tenant's ids or slots (or a whole id / access map).
_LISTING = [
    (TenantTree, "slots"),
    (TenantTree, "view"),
    (TenantTree, "_build_view"),
    (_Index, "readable_ids"),
    (_Index, "owned_ids"),
    (_Index, "received"),
    (IndexSearch, "_sorted_slots"),
    (SortedMap, "items"),
]


def _arm(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From here on, a call to a listing method is recorded and refused."""
    calls: list[str] = []
    for cls, name in _LISTING:

        def refuse(*_a: object, _n: str = f"{cls.__name__}.{name}", **_k: object) -> None:
            calls.append(_n)
            raise AssertionError(f"point access listed a tenant's ids via {_n}")

        monkeypatch.setattr(cls, name, refuse)
    return calls


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def _index() -> CuratorIndex:
    idx = CuratorIndex(8, "l2", _CFG)
    idx.insert(np.arange(_N), _vecs(_N), owner="big")
    idx.insert(np.arange(100), _vecs(100, 1), owner="small")
    idx.grant(np.arange(0, _N, 3), "reader", owner="big")
    assert idx.is_trained
    idx.search("big", _vecs(2, 2), 5)  # views built; the trap must catch rebuilds too
    return idx


def test_index_point_calls_list_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    idx = _index()
    calls = _arm(monkeypatch)
    with pytest.raises(AssertionError, match="listed"):  # the trap is armed
        idx.readable_ids("big")
    calls.clear()
    assert idx.can_read([3, 4], "big", "reader").tolist() == [True, False]
    assert idx.contains([5, _N + 5], owner="big").tolist() == [True, False]
    assert idx.get_vectors([7], owner="big").shape == (1, 8)
    assert idx.grant([4], "reader", owner="big") == 1
    assert idx.revoke([3], "reader", owner="big") == 1
    assert idx.can_read([3, 4], "big", "reader").tolist() == [False, True]
    assert idx.delete([4], owner="big") == 1
    assert idx.contains([4], owner="big").tolist() == [False]
    assert idx.owner_of([9], owner="big") == ["big"]
    assert calls == []


def test_database_point_calls_list_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(DatabaseConfig(data_dir=str(tmp_path), max_batch=5000), background=False)
    try:
        for t in ("a", "b"):
            db.create_tenant(t)
        db.create_collection("docs", 8, "l2", _CFG)
        db.allow_sharing("a", "b")
        db.upsert("docs", np.arange(_N), _vecs(_N), tenant="a")
        db.grant("docs", np.arange(0, _N, 2), "b", tenant="a")
        assert db.train("docs") or db._collection("docs").index.is_trained
        db.search("docs", _vecs(2, 2), 5, tenant="a")
        calls = _arm(monkeypatch)
        assert db.get("docs", [10, 11], tenant="b", owner="a").ids.tolist() == [10]
        assert db.get("docs", [11], tenant="a").ids.tolist() == [11]
        assert db.grant("docs", [11], "b", tenant="a").count == 1
        assert db.revoke("docs", [10], "b", tenant="a").count == 1
        assert db.get("docs", [10, 11], tenant="b", owner="a").ids.tolist() == [11]
        assert db.delete("docs", [11, _N + 1], tenant="a").count == 1
        assert db.get("docs", [11], tenant="a").ids.tolist() == []
        assert calls == []
        with pytest.raises(AssertionError, match="listed"):  # armed: a search lists slots
            db.search("docs", _vecs(1, 3), 5, tenant="b")  # (b's view changed: rebuilt)
    finally:
        monkeypatch.undo()
        db.close()
