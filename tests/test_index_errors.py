"""Bad input to CuratorIndex raises a clear error and changes nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig, SearchParams
from curator.errors import CuratorError, FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
def idx() -> CuratorIndex:
    i = CuratorIndex(4, "l2", IndexConfig(train_min_vectors=50, max_sl_size=8))
    x = np.random.default_rng(0).standard_normal((80, 4)).astype(np.float32)
    i.insert(np.arange(80), x, owner="a")
    i.grant(np.arange(0, 80, 2), "b")
    return i


def _state(i: CuratorIndex) -> Any:
    q = np.ones((2, 4), np.float32)
    return (
        len(i),
        i.tenants(),
        [i.readable_ids(t).tolist() for t in i.tenants()],
        i.search("a", q, 5)[0].tolist(),
        i.search("b", q, 5)[0].tolist(),
    )


NAN = np.full((1, 4), np.nan, np.float32)
CASES: list[tuple[type[CuratorError], str, Any]] = [
    (
        InvalidArgument,
        r"shape \(n, 4\)",
        lambda i: i.insert([100], np.ones((1, 5), np.float32), "a"),
    ),
    (InvalidArgument, "shape", lambda i: i.insert([100], np.ones((1, 2, 2), np.float32), "a")),
    (InvalidArgument, "NaN", lambda i: i.insert([100], NAN, "a")),
    (InvalidArgument, "NaN", lambda i: i.insert([100], np.full((1, 4), np.inf), "a")),
    (InvalidArgument, "unique", lambda i: i.insert([100, 100], np.ones((2, 4)), "a")),
    (InvalidArgument, "one vector per id", lambda i: i.insert([100, 101], np.ones((1, 4)), "a")),
    (InvalidArgument, ">= 0", lambda i: i.insert([-1], np.ones((1, 4)), "a")),
    (
        InvalidArgument,
        "<=",
        lambda i: i.insert(np.array([2**64 - 1], np.uint64), np.ones((1, 4)), "a"),
    ),
    (InvalidArgument, "integer ids", lambda i: i.insert([1.5], np.ones((1, 4)), "a")),
    (InvalidArgument, "tenant", lambda i: i.insert([100], np.ones((1, 4)), "")),
    (InvalidArgument, "tenant", lambda i: i.insert([100], np.ones((1, 4)), -7)),
    (InvalidArgument, "tenant", lambda i: i.insert([100], np.ones((1, 4)), "a b")),
    (InvalidArgument, "bytes", lambda i: i.insert([100], np.ones((1, 4)), "\U0001f600" * 40)),
    # a component above ~1.8e19 overflows a float32 squared norm: refused, not stored as zeros
    (InvalidArgument, "squared norm", lambda i: i.insert([100], np.full((1, 4), 1e20), "a")),
    (InvalidArgument, "squared norm", lambda i: i.search("a", np.full((1, 4), 1e20), 5)),
    (InvalidArgument, "k", lambda i: i.search("a", np.ones((1, 4)), 0)),
    (InvalidArgument, "k", lambda i: i.search("a", np.ones((1, 4)), 4097)),
    (InvalidArgument, "k", lambda i: i.search("a", np.ones((1, 4)), 2.5)),
    (InvalidArgument, "queries", lambda i: i.search("a", np.ones((1, 3)), 5)),
    (InvalidArgument, "NaN", lambda i: i.search("a", NAN, 5)),
    (
        InvalidArgument,
        "search_ef",
        lambda i: i.search("a", np.ones((1, 4)), 5, SearchParams(search_ef=0)),
    ),
    (NotFound, "tenant", lambda i: i.search("nobody", np.ones((1, 4)), 5)),
    (NotFound, "tenant", lambda i: i.search(["a", "nobody"], np.ones((1, 4)), 5)),
    (NotFound, "tenant", lambda i: i.revoke([1], "nobody")),
    (NotFound, "tenant", lambda i: i.drop_tenant("nobody")),
    (NotFound, "unknown id", lambda i: i.grant([1, 999], "b")),
    (NotFound, "unknown id", lambda i: i.revoke([999], "b")),
    (FailedPrecondition, "owner", lambda i: i.revoke([1], "a")),
]


@pytest.mark.parametrize(("exc", "words", "call"), CASES)
def test_rejected_calls_change_nothing(
    idx: CuratorIndex, exc: type[CuratorError], words: str, call: Any
) -> None:
    before = _state(idx)
    with pytest.raises(exc, match=words):
        call(idx)
    assert _state(idx) == before
    idx.check_invariants()


def test_cosine_rejects_zero_vectors() -> None:
    i = CuratorIndex(3, "cosine")
    with pytest.raises(InvalidArgument, match="zero"):
        i.insert([1], np.zeros((1, 3)), "a")
    assert len(i) == 0


def test_bad_configuration() -> None:
    with pytest.raises(InvalidArgument, match="branching"):
        IndexConfig(branching=1)
    with pytest.raises(InvalidArgument, match="metric"):
        CuratorIndex(4, "manhattan")
    with pytest.raises(InvalidArgument, match="dim"):
        CuratorIndex(0)


def test_delete_ignores_unknown_ids_and_upsert_replaces(idx: CuratorIndex) -> None:
    assert idx.delete([1, 999]) == 1
    before_b = idx.readable_ids("b").tolist()
    # ids are scoped per owner: "c" inserting id 2 creates its own vector, a's id 2 stays
    idx.insert([2], np.full((1, 4), 9, np.float32), owner="c")
    assert idx.owner_of([2], owner="c") == ["c"] and idx.owner_of([2], owner="a") == ["a"]
    assert idx.readable_ids("b").tolist() == before_b
    with pytest.raises(InvalidArgument, match="name the owner"):
        idx.owner_of([2])
    # replacing one's own id drops its grants
    granted = [i for i in before_b if i in idx.owned_ids("a").tolist()]
    idx.insert([granted[0]], np.full((1, 4), 3, np.float32), owner="a")
    assert granted[0] not in idx.readable_ids("b").tolist()
    assert idx.delete([2], owner="c") == 1 and idx.owner_of([2]) == ["a"]
    idx.check_invariants()
