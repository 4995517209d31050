"""The one-id write paths (insert, upsert, grant, revoke, delete of a single id, and
`insert(..., readers=...)`) leave the same state as the batch paths: random write sequences
applied id by id to one index and as batches to another, both compared after every step with
a model of who reads what, with the index invariants and with tenant views built from scratch
(the one-id paths patch cached views)."""

from __future__ import annotations

import numpy as np
import pytest

from curator import CuratorIndex, IndexConfig
from curator.errors import InvalidArgument, NotFound
from curator.validation import MAX_ID, as_ids

TENANTS = ["a", "b", "c", "d", "e"]
CFG = IndexConfig(branching=4, max_leaf_size=8, max_sl_size=4, max_depth=3, train_min_vectors=64)


def _vec(i: int, version: int) -> np.ndarray:
    return np.random.default_rng(1000 * version + i).standard_normal((1, 4)).astype(np.float32)


def _assert_state(idx: CuratorIndex, model: dict[tuple[str, int], set[str]]) -> None:
    idx.check_invariants()
    for t in TENANTS:
        if not idx.has_tenant(t):
            assert not any(t in r for r in model.values())
            continue
        want = sorted(i for (_, i), readers in model.items() if t in readers)
        assert idx.readable_ids(t).tolist() == want
        owned = sorted(i for (o, i) in model if o == t)
        assert idx.owned_ids(t).tolist() == owned
        tt = idx._tenant_tree(t)
        got, rebuilt = tt.view(idx._tree), tt._build_view(idx._tree)
        for name in ("node", "child_ptr", "child", "sl_ptr", "slots"):
            assert np.array_equal(getattr(got, name), getattr(rebuilt, name)), (t, name)


@pytest.mark.parametrize("seed", range(3))
def test_one_id_writes_match_batch_writes_and_a_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    single, batch = CuratorIndex(4, "l2", CFG), CuratorIndex(4, "l2", CFG)
    model: dict[tuple[str, int], set[str]] = {}
    q = np.zeros((1, 4), np.float32)
    for step in range(220):
        for idx in (single, batch):  # cached views, as between searches: writes patch them
            for t in TENANTS:
                if idx.has_tenant(t):
                    idx.search(t, q, 1)
        op = rng.choice(["insert", "insert", "readers", "grant", "revoke", "delete"])
        owner = str(rng.choice(TENANTS))
        ids = sorted(set(rng.integers(0, 60, int(rng.integers(1, 5))).tolist()))
        if op in ("insert", "readers"):
            readers = [str(t) for t in rng.choice(TENANTS, 2, replace=False)]
            x = np.vstack([_vec(i, step) for i in ids])
            if op == "readers":
                for i, row in zip(ids, x, strict=True):
                    single.insert([i], row[None], owner=owner, readers=readers)
                batch.insert(ids, x, owner=owner, readers=readers)
            else:
                readers = []
                for i, row in zip(ids, x, strict=True):
                    single.insert([i], row[None], owner=owner)
                batch.insert(np.array(ids), x, owner=owner)
            for i in ids:  # an upsert replaces: old grants go
                model[(owner, i)] = {owner, *readers}
            continue
        known = [i for i in ids if (owner, i) in model]
        tenant = str(rng.choice([t for t in TENANTS if t != owner]))
        if op == "delete":
            n1 = sum(single.delete([i], owner=owner) for i in ids)
            assert n1 == batch.delete(ids, owner=owner) == len(known)
            for i in known:
                del model[(owner, i)]
        elif not known:
            continue
        elif op == "grant":
            n1 = sum(single.grant([i], tenant, owner=owner) for i in known)
            assert n1 == batch.grant(known, tenant, owner=owner)
            assert n1 == sum(tenant not in model[(owner, i)] for i in known)
            for i in known:
                model[(owner, i)].add(tenant)
        elif single.has_tenant(tenant):  # revoke
            n1 = sum(single.revoke([i], tenant, owner=owner) for i in known)
            assert n1 == batch.revoke(known, tenant, owner=owner)
            assert n1 == sum(tenant in model[(owner, i)] for i in known)
            for i in known:
                model[(owner, i)].discard(tenant)
        if step % 7 == 0 or step > 200:
            _assert_state(single, model)
            _assert_state(batch, model)
    assert single.is_trained and batch.is_trained  # the paths ran on a trained tree too
    _assert_state(single, model)
    _assert_state(batch, model)


def test_insert_with_readers_validates_readers_before_anything_changes() -> None:
    idx = CuratorIndex(4, "l2")
    x = np.eye(4, dtype=np.float32)[:2]
    with pytest.raises(InvalidArgument):
        idx.insert([1, 2], x, owner="a", readers=["b", "bad name"])
    assert len(idx) == 0 and not idx.has_tenant("b")
    idx.insert([1, 2], x, owner="a", readers=["b", "b", "a"])  # repeats and the owner: fine
    idx.insert([3], x[:1], owner="a", readers=None)
    idx.insert([4], x[1:], owner="a", readers=0)  # a numeric tenant key, not "no readers"
    assert idx.readable_ids(0).tolist() == [4]
    assert idx.readable_ids("b").tolist() == [1, 2]
    assert idx.revoke([1, 2], "b", owner="a") == 2
    with pytest.raises(NotFound):
        idx.grant([5], "b", owner="a")
    idx.check_invariants()


@pytest.mark.parametrize(
    ("ids", "message"),
    [([-1], ">= 0"), ([int(MAX_ID) + 1], f"<= {int(MAX_ID)}"), ([True], "integer ids")],
)
def test_one_id_validation_refuses_what_the_general_path_refuses(ids: list, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        as_ids(ids)


def test_small_batches_refuse_repeated_ids() -> None:
    assert as_ids([7]).tolist() == [7] and as_ids([int(MAX_ID)]).dtype == np.uint64
    with pytest.raises(InvalidArgument, match="unique ids"):
        as_ids([3, 5, 3])
    with pytest.raises(InvalidArgument, match="unique ids"):
        as_ids(np.r_[np.arange(100), 42])
    assert as_ids([3, 5, 3], unique=False).tolist() == [3, 5, 3]
