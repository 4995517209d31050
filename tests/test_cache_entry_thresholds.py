"""Per-entry thresholds learned from feedback (curator/cache/entry_thresholds.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.cache.entry_thresholds import ENTRY_PREFIX, entry_threshold
from tests.test_cache import Clock, emb, lookup, near, open_db, store


def test_an_entry_without_feedback_keeps_the_category_threshold() -> None:
    none = np.zeros(0)
    assert entry_threshold(none, none.astype(bool), 0.92, 0.05, 30) == 0.92
    # correct answers alone, too few to show the bound: no lowering
    s = np.array([0.85, 0.86, 0.9])
    assert entry_threshold(s, np.ones(3, bool), 0.92, 0.05, 30) == 0.92


def test_a_wrong_answer_raises_the_entry_above_its_score() -> None:
    s, ok = np.array([0.95, 0.97]), np.array([False, True])
    t = entry_threshold(s, ok, 0.92, 0.05, 30)
    assert 0.95 < t < 0.951
    # a wrong answer below the category's threshold changes nothing
    assert entry_threshold(np.array([0.85]), np.array([False]), 0.92, 0.05, 30) == 0.92
    assert entry_threshold(np.array([0.9999999]), np.array([False]), 0.92, 0.05, 30) == 1.0


def test_enough_feedback_of_its_own_sets_the_entry_cut_and_holds_the_bound() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.8, 1.0, 400)
    ok = s >= 0.86  # this entry has no near-misses above 0.86
    ok[rng.choice(np.flatnonzero(ok), 3, replace=False)] = False  # label noise
    t = entry_threshold(s, ok, 0.92, 0.05, 30)
    assert 0.85 < t < 0.92  # lower than the category's, on the entry's own evidence
    assert 1 - ok[s >= t].mean() <= 0.05
    bad = rng.uniform(size=400) < 0.3  # wrong 30% of the time at every score
    assert entry_threshold(s, ~bad, 0.92, 0.05, 30) == 1.0


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = open_db(tmp_path, Clock(), calibration_min_obs=10)
    d.create_tenant("a")
    yield d
    d.close()


def test_feedback_moves_only_the_entry_it_names(tmp_path: Path) -> None:
    d = open_db(tmp_path, Clock(), calibration_min_obs=10)
    d.create_tenant("a")
    templated, plain = emb(10), emb(11)
    t_id = store(d, "rehab center in Newton County AR", templated, "newton").entry_id
    store(d, "how do I bake bread", plain, "bread")
    r = lookup(d, "rehab center in Carroll County AR", near(templated, 0.95, 1))
    assert r.hit and r.entry_id == t_id
    got = d.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=False)
    assert got["entry_feedback"] == 1 and got["entry_feedback_wrong"] == 1
    assert 0.95 < got["entry_threshold"] < 0.951
    assert got["feedback"] == 1 and got["learned_threshold"] != got["learned_threshold"]  # nan
    # the templated entry no longer serves at 0.95; it still serves closer requests
    again = lookup(d, "rehab center in Adams County AR", near(templated, 0.95, 2))
    assert not again.hit and again.reason == "below_threshold"
    assert lookup(d, "rehab center Newton County AR", near(templated, 0.97, 3)).hit
    # the other entry of the same category keeps the category's threshold
    assert lookup(d, "how can I bake bread", near(plain, 0.95, 4)).hit
    d.close()
    # persisted: the next start refuses the same request
    d = open_db(tmp_path, Clock(), calibration_min_obs=10)
    assert not lookup(d, "rehab center in Adams County AR", near(templated, 0.95, 2)).hit
    # deleting the entry deletes its observations
    d.cache_invalidate(tenant="a")
    d.cache.sweep()
    with d.cache.store.read() as txn:
        keys = [k for k, _ in d.cache.store.scan_raw(txn, "cache_policies")]
    assert not [k for k in keys if k.startswith(ENTRY_PREFIX.encode())]
    assert len(d.cache.entry_thresholds) == 0
    d.close()


def test_a_verified_category_uses_entry_thresholds_on_its_scores(db) -> None:  # type: ignore[no-untyped-def]
    db.cache_set_policy("general", tenant="a", verify=True)
    base = emb(12)
    eid = store(db, "how do i sort a list in python", base, "sorted").entry_id
    r = lookup(db, "how do i sort a list in python?", near(base, 0.97, 1))
    assert r.hit and r.entry_id == eid
    got = db.cache_feedback(tenant="a", entry_id=eid, correct=False)
    assert got["entry_threshold"] > r.score
    assert not lookup(db, "how do i sort a list in python?", near(base, 0.97, 1)).hit
    # calibration off (delta 0): entries keep the category's threshold
    db.cache_set_policy("general", tenant="a", verify=True, max_false_hit_rate=0.0)
    assert lookup(db, "how do i sort a list in python?", near(base, 0.97, 1)).hit
