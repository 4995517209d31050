"""Label predicates: set semantics against a Python model, limits, and filtered search."""

from __future__ import annotations

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig
from curator.errors import InvalidArgument
from curator.predicate import MAX_DEPTH, And, Label, Not, Or, evaluate, labels
from tests.conftest import brute_force, make_data, recall

pytestmark = pytest.mark.timeout(120)


def _model(pred, sets: dict[str, set[int]], universe: set[int]) -> set[int]:
    if isinstance(pred, Label):
        return sets[pred.name] & universe
    if isinstance(pred, Not):
        return universe - _model(pred.term, sets, universe)
    parts = [_model(t, sets, universe) for t in pred.terms]
    out = parts[0]
    for p in parts[1:]:
        out = out & p if isinstance(pred, And) else out | p
    return out


def _random_pred(rng: np.random.Generator, names: list[str], depth: int = 0):
    r = rng.random()
    if depth >= 4 or r < 0.3:
        return Label(str(rng.choice(names)))
    if r < 0.45:
        return Not(_random_pred(rng, names, depth + 1))
    terms = [_random_pred(rng, names, depth + 1) for _ in range(rng.integers(1, 4))]
    return And(*terms) if r < 0.75 else Or(*terms)


def test_evaluate_matches_set_semantics() -> None:
    rng = np.random.default_rng(0)
    names = [f"l{i}" for i in range(6)]
    sets = {n: set(rng.choice(500, rng.integers(0, 200), replace=False).tolist()) for n in names}
    for _ in range(300):
        universe = set(rng.choice(500, 300, replace=False).tolist())
        pred = _random_pred(rng, names)
        readable = np.array(sorted(universe), np.int32)
        got = evaluate(pred, readable, lambda n: np.array(sorted(sets[n]), np.int32))
        assert got.dtype == np.int32 and (np.diff(got) > 0).all()
        assert set(got.tolist()) == _model(pred, sets, universe), pred


def test_predicates_are_checked() -> None:
    deep = Label("a")
    for _ in range(MAX_DEPTH + 1):
        deep = Not(deep)
    with pytest.raises(InvalidArgument, match="deep"):
        labels(deep)
    with pytest.raises(InvalidArgument, match="at least one term"):
        labels(And())
    with pytest.raises(InvalidArgument, match="expected a Label"):
        labels(And(Label("a"), "b"))  # type: ignore[arg-type]
    for bad in (-7, 1.5, True):  # names, or the database's (non-negative) tenant ids
        with pytest.raises(InvalidArgument, match="label name"):
            labels(Label(bad))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="at most"):
        labels(Or(*[Label(f"x{i}") for i in range(300)]))


@pytest.fixture(scope="module")
def labelled() -> tuple[CuratorIndex, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    d = make_data(n=3000, d=16, n_tenants=6, seed=9)
    idx = CuratorIndex(16, "l2", IndexConfig(train_min_vectors=1000, max_sl_size=64))
    idx.insert(np.arange(3000), d.x, owner="owner")
    rng = np.random.default_rng(1)
    sets = {
        "big": np.flatnonzero(rng.random(3000) < 0.6),
        "mid": np.flatnonzero(rng.random(3000) < 0.3),
    }
    sets["small"] = np.flatnonzero(rng.random(3000) < 0.02)
    for name, ids in sets.items():
        idx.grant(ids, name)
    idx.build_graph()  # linked up front (a first search would start it in the background)
    return idx, sets, d.x, d.queries[:40]


@pytest.mark.parametrize(
    "where, expect",
    [
        (And(Label("big"), Label("mid")), lambda s: np.intersect1d(s["big"], s["mid"])),
        (Or(Label("small"), Label("mid")), lambda s: np.union1d(s["small"], s["mid"])),
        (And(Label("big"), Not(Label("mid"))), lambda s: np.setdiff1d(s["big"], s["mid"])),
        (And(Label("small"), Label("big")), lambda s: np.intersect1d(s["small"], s["big"])),
        (Not(Label("big")), lambda s: np.setdiff1d(np.arange(3000), s["big"])),
    ],
)
def test_filtered_search_recall_and_isolation(labelled, where, expect) -> None:
    idx, sets, x, q = labelled
    allowed = expect(sets)
    got, got_d, plan = idx.search("owner", q, 10, where=where, explain=True)
    assert np.isin(got[got >= 0], allowed).all(), "a result outside the predicate"
    truth, truth_d = brute_force(x, allowed, q, 10, "l2")
    assert recall(got, got_d, truth, truth_d) >= 0.95, plan
    assert plan.filter_size == len(allowed)
    assert plan.path == "exact"  # qualifying sets up to SET_EXACT_MAX are scanned exactly


def test_predicate_is_limited_to_what_the_caller_reads(labelled) -> None:
    idx, sets, _, q = labelled
    got, _ = idx.search("small", q, 10, where=Or(Label("big"), Label("mid")))
    assert np.isin(got[got >= 0], sets["small"]).all()
    # A label nothing was granted to selects nothing (the Database decides who may name it).
    got, dist = idx.search("owner", q, 10, where=Label("nope"))
    assert (got == -1).all() and np.isinf(dist).all()
    got, _ = idx.search("owner", q, 10, where=Not(Label("nope")))
    assert (got >= 0).all()


def test_search_and_is_the_and_predicate(labelled) -> None:
    idx, _, _, q = labelled
    a = idx.search_and(("big", "mid"), q, 10)
    b = idx.search("big", q, 10, where=And(Label("big"), Label("mid")))
    np.testing.assert_array_equal(a[0], b[0])


def test_large_predicate_results_go_through_the_graph(labelled, monkeypatch) -> None:
    from curator.index import planner

    monkeypatch.setattr(planner, "SET_EXACT_MAX", 500)
    idx, sets, x, q = labelled
    allowed = np.setdiff1d(sets["big"], sets["mid"])
    got, got_d, plan = idx.search(
        "owner", q, 10, where=And(Label("big"), Not(Label("mid"))), explain=True
    )
    assert plan.path == "graph" and plan.filter_size == len(allowed)
    assert np.isin(got[got >= 0], allowed).all()
    truth, truth_d = brute_force(x, allowed, q, 10, "l2")
    assert recall(got, got_d, truth, truth_d) >= 0.95
