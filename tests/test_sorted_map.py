"""SortedMap against a dict model (hypothesis), and its range queries."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.index.sorted_map import SortedMap

# Up to 100 keys a call: both sides of the compiled small-put path (<= 64 keys).
keys = st.lists(st.integers(-(2**62), 2**62), max_size=100, unique=True)
ops = st.lists(st.tuples(st.sampled_from(["put", "remove", "merge"]), keys), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_matches_a_dict(operations: list[tuple[str, list[int]]]) -> None:
    m = SortedMap()
    model: dict[int, int] = {}
    for i, (op, ks) in enumerate(operations):
        arr = np.array(ks, np.int64)
        if op == "put":
            m.put(arr, arr % 1000 + i)
            model.update({k: k % 1000 + i for k in ks})
        elif op == "merge":  # into main: later puts overwrite there or sit beside tombstones
            m._merge()
        else:
            assert m.remove(arr) == sum(k in model for k in ks)
            for k in ks:
                model.pop(k, None)
        assert len(m) == len(model)
    probe = np.array(sorted(set(model) | {0, 1, -1}), np.int64)
    assert m.get(probe).tolist() == [model.get(k, -1) for k in probe.tolist()]
    k, v = m.items()
    assert dict(zip(k.tolist(), v.tolist(), strict=True)) == model
    assert k.tolist() == sorted(model)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_key_set_add_reports_new_keys(operations: list[tuple[str, list[int]]]) -> None:
    m = SortedMap(values=False)
    model: set[int] = set()
    for op, ks in operations:
        arr = np.array(ks, np.int64)
        if op == "put":
            assert m.add(arr).tolist() == [k not in model for k in ks]
            model.update(ks)
        elif op == "merge":
            m._merge()
        else:
            assert m.remove(arr) == sum(k in model for k in ks)
            model.difference_update(ks)
        assert len(m) == len(model)
    probe = np.array(sorted(model | {0, 1, -1}), np.int64)
    assert m.contains(probe).tolist() == [k in model for k in probe.tolist()]
    assert m.items()[0].tolist() == sorted(model)


def test_range_spans_main_and_delta_and_skips_tombstones() -> None:
    m = SortedMap(values=False)
    m.put(np.arange(0, 20_000, 2))  # large enough to be merged into main
    m.put(np.array([5, 7, 9]))  # still in the delta
    m.remove(np.array([4, 6]))  # tombstones in main
    got, _ = m.range(np.array([3, 100]), np.array([10, 104]))
    assert got.tolist() == [5, 7, 8, 9, 100, 102]
    assert m.contains(np.array([4, 5, 6, 8])).tolist() == [False, True, False, True]


# Keys from a small domain, so that removes and ranges hit present keys (in main, in the
# delta and tombstoned), on both sides of the compiled small path (<= 64 keys or ranges).
small_keys = st.lists(st.integers(0, 300), max_size=90, unique=True)
small_ops = st.lists(
    st.tuples(st.sampled_from(["put", "remove", "merge", "range"]), small_keys), max_size=30
)


@settings(max_examples=80, deadline=None)
@given(small_ops, st.booleans())
def test_removes_and_ranges_match_a_dict(
    operations: list[tuple[str, list[int]]], values: bool
) -> None:
    m = SortedMap(values=values)
    model: dict[int, int] = {}
    for i, (op, ks) in enumerate(operations):
        arr = np.array(ks, np.int64)
        if op == "put" and values:  # swap: a put that returns the previous values
            assert m.swap(arr, arr + i).tolist() == [model.get(k, -1) for k in ks]
            model.update({k: k + i for k in ks})
        elif op == "put":
            assert m.add(arr).tolist() == [k not in model for k in ks]
            model.update({k: 1 for k in ks})
        elif op == "merge":
            m._merge()
        elif op == "remove":
            assert m.remove(arr) == sum(k in model for k in ks)
            for k in ks:
                model.pop(k, None)
        else:  # sorted, disjoint ranges [k, k + 3) starting at every other listed key
            lo = np.array(sorted(ks)[::2], np.int64)
            lo = lo[np.r_[True, np.diff(lo) >= 3]] if len(lo) else lo
            got_k, got_v = m.range(lo, lo + 3)
            want = [k for a in lo.tolist() for k in range(a, a + 3) if k in model]
            assert got_k.tolist() == want
            assert got_v.tolist() == [model[k] for k in want]
        assert len(m) == len(model)
    probe = np.arange(-1, 302, dtype=np.int64)
    assert m.get(probe).tolist() == [model.get(k, -1) for k in probe.tolist()]
