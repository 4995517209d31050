"""Search filtered by labels (AND / OR / NOT) and explained, on every surface: in-process,
gRPC through the SDK, HTTP/JSON. Labels are tenants that vectors are granted to; a search may
name only the searched tenants and the tenants they may share with, and a label that is no
tenant is refused exactly like one that may not be used (no oracle of tenant names)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curator import And, Label, Not, Or, errors
from curator.config import DatabaseConfig
from curator.database import Database
from curator.predicate import MAX_DEPTH
from curator_api import predicates as wire
from curator_api.v1 import curator_pb2 as pb
from tests.test_server import Served

DIM = 8
N = 600


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(DatabaseConfig(data_dir=str(tmp_path)), background=False)
    for t in ("owner", "reader", "lang:en", "lang:fr", "section:web"):
        d.create_tenant(t)
    d.create_collection("docs", DIM, "l2")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    d.upsert("docs", np.arange(N), x, tenant="owner")
    for label in ("lang:en", "lang:fr", "section:web"):
        d.allow_sharing("owner", label)
    d.grant("docs", np.arange(0, 400), "lang:en", tenant="owner")  # 0..399 English
    d.grant("docs", np.arange(400, N), "lang:fr", tenant="owner")  # 400..599 French
    d.grant("docs", np.arange(0, N, 3), "section:web", tenant="owner")  # every third: web
    d.x = x  # type: ignore[attr-defined]
    yield d
    d.close()


def _exact(x: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    d = ((x[allowed][None] - q[:, None]) ** 2).sum(-1)
    return allowed[np.argsort(d, axis=1)[:, :k]]


def test_where_returns_the_exact_top_k_of_the_qualifying_set(db: Database) -> None:
    x = db.x  # type: ignore[attr-defined]
    q = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    ids = np.arange(N)
    cases = [
        (Label("lang:en"), ids < 400),
        (And(Label("lang:en"), Not(Label("section:web"))), (ids < 400) & (ids % 3 != 0)),
        (Or(Label("lang:fr"), Label("section:web")), (ids >= 400) | (ids % 3 == 0)),
        (Not(Label("lang:en")), ids >= 400),
    ]
    for where, mask in cases:
        res = db.search("docs", q, 10, tenant="owner", where=where, explain=True)
        want = _exact(x, q, ids[mask], 10)
        np.testing.assert_array_equal(res.ids.astype(np.int64), want)
        assert res.plan is not None and res.plan.filter_size == mask.sum()
        assert res.plan.path in ("exact", "tree", "graph") and res.plan.touched > 0
        assert res.plan.queries == 5
    assert db.search("docs", q, 10, tenant="owner").plan is None  # only when asked for


def test_labels_a_tenant_may_not_use_are_refused_like_unknown_ones(db: Database) -> None:
    q = np.zeros((1, DIM), np.float32)
    db.allow_sharing("owner", "reader")
    db.grant("docs", [1, 2], "reader", tenant="owner")
    # reader may not filter by lang:en (not in its share list), nor by a tenant that does not
    # exist: the same error, so the answer says nothing of which names exist.
    msgs = []
    for name in ("lang:en", "no-such-tenant"):
        with pytest.raises(errors.PermissionDenied) as e:
            db.search("docs", q, 5, tenant="reader", where=Label(name))
        msgs.append(str(e.value).replace(repr(name), "X"))
    assert msgs[0] == msgs[1]
    db.allow_sharing("reader", "lang:en")
    res = db.search("docs", q, 5, tenant="reader", where=Label("lang:en"))
    assert sorted(res.ids[res.found].tolist()) == [1, 2]  # within what the reader reads
    with pytest.raises(errors.InvalidArgument, match="where or require_all"):
        db.search("docs", q, 5, tenant=["owner", "lang:en"], where=Label("owner"), require_all=True)
    with pytest.raises(errors.InvalidArgument, match="expected a label name"):
        db.search("docs", q, 5, tenant="owner", where=Label(3.5))  # type: ignore[arg-type]


def _deep_json(depth: int) -> dict:
    v: dict = {"label": "lang:en"}
    for _ in range(depth):
        v = {"not": v}
    return v


def test_wire_forms_round_trip_and_refuse_hostile_input() -> None:
    p = And(Label("a"), Or(Not(Label("b")), Label("c")))
    assert wire.predicate_from_pb(wire.predicate_to_pb(p)) == p
    assert wire.predicate_from_json(wire.predicate_to_json(p)) == p
    with pytest.raises(errors.InvalidArgument, match="deep"):
        wire.predicate_from_json(_deep_json(10_000))  # refused while walking, no recursion error
    m = pb.Predicate(label="x")
    for _ in range(MAX_DEPTH + 5):
        m = pb.Predicate(**{"not": m})
    with pytest.raises(errors.InvalidArgument, match="deep"):
        wire.predicate_from_pb(m)
    for bad in (
        [],
        {"label": 3},
        {"and": {"label": "x"}},
        {"xor": []},
        {"label": "a", "not": {}},
        {"and": []},
    ):
        with pytest.raises(errors.InvalidArgument):
            wire.predicate_from_json(bad)
    with pytest.raises(errors.InvalidArgument, match="at least one term"):
        wire.predicate_from_pb(pb.Predicate(**{"or": pb.Predicates()}))
    with pytest.raises(errors.InvalidArgument, match="got none"):
        wire.predicate_from_pb(pb.Predicate())
    with pytest.raises(errors.InvalidArgument, match="at most 256 labels"):
        wire.predicate_from_json({"or": [{"label": f"l{i}"} for i in range(300)]})


def test_where_and_explain_over_grpc_equal_in_process(tmp_path: Path) -> None:
    s = Served(tmp_path)
    try:
        d = s.db
        for t in ("owner", "lang:en"):
            d.create_tenant(t)
        d.create_collection("docs", DIM, "l2")
        x = np.random.default_rng(3).standard_normal((300, DIM)).astype(np.float32)
        d.upsert("docs", np.arange(300), x, tenant="owner")
        d.allow_sharing("owner", "lang:en")
        d.grant("docs", np.arange(0, 300, 2), "lang:en", tenant="owner")
        q = x[:3] + 0.01
        where = Not(Label("lang:en"))
        local = d.search("docs", q, 7, tenant="owner", where=where, explain=True)
        with s.client() as c:
            remote = c.search("docs", q, 7, tenant="owner", where=where, explain=True)
            np.testing.assert_array_equal(remote.ids, local.ids)
            assert remote.plan == local.plan
            assert (remote.ids[remote.found] % 2 == 1).all()
            with pytest.raises(errors.PermissionDenied):
                c.search("docs", q, 7, tenant="owner", where=Label("nobody"))
    finally:
        s.close()
