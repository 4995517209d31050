"""A tenant's sub-tree: the split and merge rules on a small, hand-checkable shared tree."""

from __future__ import annotations

import numpy as np
import pytest

from curator.config import IndexConfig
from curator.errors import Internal
from curator.index.tenant_tree import TenantTree
from curator.index.tree import SharedTree


@pytest.fixture(scope="module")
def tree() -> tuple[SharedTree, np.ndarray]:
    """A 2-level tree with branching 4 over 4 well-separated clusters of 50 points."""
    rng = np.random.default_rng(0)
    centers = np.eye(4, dtype=np.float32) * 100
    x = (centers.repeat(50, 0) + rng.standard_normal((200, 4))).astype(np.float32)
    t = SharedTree.train(x, IndexConfig(branching=4, max_leaf_size=20, max_depth=2))
    return t, t.route(x)


def test_a_small_tenant_lives_in_one_root_shortlist(tree) -> None:
    t, leaf = tree
    tt = TenantTree()
    tt.add(t, leaf, np.arange(5, dtype=np.int32), max_sl_size=8)
    assert list(tt.shortlists) == [0] and not tt.expanded
    tt.check(t, leaf, 8)


def test_overflow_splits_down_and_removal_merges_back(tree) -> None:
    t, leaf = tree
    tt = TenantTree()
    slots = np.arange(0, 200, 10, dtype=np.int32)  # 20 vectors, 5 per cluster
    tt.add(t, leaf, slots[:8], max_sl_size=8)
    assert list(tt.shortlists) == [0]
    tt.add(t, leaf, slots[8:9], max_sl_size=8)  # the 9th vector splits the root shortlist
    assert 0 in tt.expanded and 0 not in tt.shortlists
    assert all(t.parent[n] == 0 for n in tt.shortlists)
    tt.add(t, leaf, slots[9:], max_sl_size=8)
    tt.check(t, leaf, 8)
    assert sorted(tt.slots().tolist()) == slots.tolist()
    view = tt.view(t)
    assert view.node[0] == 0 and len(view.slots) == 20
    tt.remove(t, leaf, slots[:13], max_sl_size=8)  # 7 left: everything merges to the root
    tt.check(t, leaf, 8)
    assert list(tt.shortlists) == [0] and not tt.expanded
    tt.remove(t, leaf, slots[13:], max_sl_size=8)
    assert tt.size == 0 and not tt.shortlists and not tt.expanded
    assert len(tt.view(t).node) == 0


def test_leaf_shortlists_have_no_size_limit(tree) -> None:
    t, leaf = tree
    tt = TenantTree()
    one_leaf = np.flatnonzero(leaf == leaf[0]).astype(np.int32)
    tt.add(t, leaf, one_leaf, max_sl_size=2)
    tt.check(t, leaf, 2)
    assert tt.shortlists[int(leaf[0])].size == len(one_leaf) > 2


def test_check_detects_a_broken_invariant(tree) -> None:
    t, leaf = tree
    tt = TenantTree()
    tt.add(t, leaf, np.arange(30, dtype=np.int32), max_sl_size=8)
    node = next(iter(tt.shortlists))
    tt.shortlists[node] = np.append(tt.shortlists[node], np.int32(199))  # not under `node`
    tt.size += 1
    with pytest.raises(Internal):
        tt.check(t, leaf, 8)


def test_removing_a_slot_the_tenant_lacks_is_an_internal_error(tree) -> None:
    t, leaf = tree
    tt = TenantTree()
    tt.add(t, leaf, np.arange(3, dtype=np.int32), max_sl_size=8)
    with pytest.raises(Internal):
        tt.remove(t, leaf, np.array([150], np.int32), max_sl_size=8)


@pytest.mark.parametrize("seed", range(4))
def test_a_patched_view_equals_a_rebuilt_one(tree, seed: int) -> None:
    """Single adds and small removes edit the cached view in place of a rebuild when the
    sub-tree keeps its shape; after every step it must equal the view built from scratch
    (same nodes, children, shortlist bounds and sorted slots), through splits and merges."""
    t, leaf = tree
    rng = np.random.default_rng(seed)
    tt = TenantTree()
    have: set[int] = set()
    patched = 0
    for _ in range(400):
        tt.view(t)  # a cached view exists before each write, as between searches
        before = tt._view
        free = sorted(set(range(200)) - have)
        if free and (not have or rng.random() < 0.6):
            s = np.array([rng.choice(free)], np.int32)
            tt.add(t, leaf, s, max_sl_size=6)
            have.add(int(s[0]))
        else:
            k = int(rng.integers(1, 4))
            s = rng.choice(sorted(have), min(k, len(have)), replace=False).astype(np.int32)
            tt.remove(t, leaf, s, max_sl_size=6)
            have -= set(s.tolist())
        tt.check(t, leaf, 6)
        patched += tt._view is before and bool(tt._vp[1])  # kept, with the write's edit
        got = tt.view(t)
        want = tt._build_view(t)
        for name in ("node", "child_ptr", "child", "sl_ptr", "slots"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert sorted(got.slots.tolist()) == sorted(have)
    assert patched > 100  # most writes kept the shape and were patched, not rebuilt


@pytest.mark.parametrize("seed", range(3))
def test_edits_pending_between_searches_give_the_rebuilt_view(tree, seed: int) -> None:
    """Writes between two searches queue their edits on the cached view; the next view()
    applies them (or rebuilds past _MAX_EDITS) and must equal a view built from scratch.
    A view with edits pending is not current for the background linker."""
    t, leaf = tree
    rng = np.random.default_rng(100 + seed)
    tt = TenantTree()
    have: set[int] = set()
    tt.add(t, leaf, np.arange(0, 200, 3, dtype=np.int32), max_sl_size=6)
    have.update(range(0, 200, 3))
    for _ in range(60):
        tt.view(t)
        for _ in range(int(rng.integers(1, 80))):  # up to past the pending-edit limit
            free = sorted(set(range(200)) - have)
            if free and rng.random() < 0.5:
                s = int(rng.choice(free))
                tt.add(t, leaf, np.array([s], np.int32), max_sl_size=6)
                have.add(s)
            elif have:
                k = min(int(rng.integers(1, 4)), len(have))
                gone = rng.choice(sorted(have), k, replace=False).astype(np.int32)
                tt.remove(t, leaf, gone, max_sl_size=6)
                have -= set(gone.tolist())
        got, want = tt.view(t), tt._build_view(t)
        assert tt._vp == (got, ())  # the edits applied once, to a new view object
        for name in ("node", "child_ptr", "child", "sl_ptr", "slots"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name
        tt.check(t, leaf, 6)
