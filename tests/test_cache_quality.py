"""Cache quality: the lexical guard, the verifier head, feedback calibration, routing across
categories (in-process, synthetic embeddings with controlled cosines)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curator import errors
from curator.cache import lexical
from curator.cache.calibration import learned_threshold
from curator.cache.verifier import LexicalVerifier
from curator.database import Database
from tests.test_cache import Clock, emb, lookup, near, open_db, store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = open_db(tmp_path, Clock(), calibration_min_obs=10)
    d.create_tenant("a")
    d.create_tenant("b")
    yield d
    d.close()


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("Rehab center in Newton County AR?", "Rehab center in Carroll County AR?", "entity"),
        ("best phone under 10k", "best phone under 20k", "number"),
        ("What causes low blood sugar?", "What causes high blood sugar?", "opposite"),
        ("How do I convert USD to INR?", "How do I convert INR to USD?", "swap"),
        ("Can I lose weight by walking?", "Can I not lose weight by walking?", "negation"),
        ("Why is Python so popular?", "Why is python so popular these days?", None),
        ("Difference between a cat and a dog?", "Difference between a dog and a cat?", None),
        ("What is 2 + 2?", "what is 2 + 2", None),
    ],
)  # fmt: skip
def test_the_guard_vetoes_what_changes_the_answer(a: str, b: str, why: str | None) -> None:
    assert lexical.veto(lexical.compare(a, b)) == why
    assert lexical.veto(lexical.compare(b, a)) == why  # symmetric


def test_the_verifier_keeps_the_cosine_scale_and_lowers_lexical_mismatches() -> None:
    head = {
        "features": ["cosine", "jaccard", "names"],
        "mean": [0.9, 0.5, 0.2],
        "scale": [0.05, 0.2, 0.4],
        "coef": [2.0, 1.0, -1.0],
        "intercept": -3.0,
        "cos_coef": 40.0,  # the cosine-only fit: logit = 40 * cos - 36
        "cos_intercept": -36.0,
    }
    v = LexicalVerifier(head, guard=False)
    same = v.verify("how do i sort a list", "how do i sort a list", 0.95)
    differs = v.verify("how do i sort a list", "how do I sort a Python list", 0.95)
    assert same.veto is None and differs.veto is None
    assert differs.score < same.score  # lower jaccard, a one-sided name
    z = v.logit(lexical.compare("how do i sort a list", "how do i sort a list"), 0.95)
    assert same.score == pytest.approx((z + 36.0) / 40.0)
    with pytest.raises(ValueError, match="cos_coef"):
        LexicalVerifier({**head, "cos_coef": 0.0})
    guarded = LexicalVerifier(head)
    assert guarded.verify("phone under 10k", "phone under 20k", 0.99).veto == "number"


def test_the_shipped_head_is_trained() -> None:
    from curator.cache.verifier_weights import WEIGHTS

    assert WEIGHTS["features"][0] == "cosine" and len(WEIGHTS["features"]) > 1
    assert WEIGHTS["cos_coef"] > 0
    v = LexicalVerifier()
    pair = ("how do i learn python quickly", "how can i learn python fast")
    # more similar, more likely; a rare substituted word, less likely
    assert v.probability(*pair, 0.99) > v.probability(*pair, 0.85)
    assert v.probability("how long does ketamine stay in your system", "how long does "
                         "klonopin stay in your system", 0.95) < v.probability(
        "how long does ketamine stay in your system", "how long does ketamine stay in "
        "the system", 0.95)  # fmt: skip


def test_a_tree_head_is_evaluated_and_checked() -> None:
    tree = [[0, -1, 1, -1, -1], [0.9, 0, 0.5, 0, 0], [1, -1, 3, -1, -1], [2, -1, 4, -1, -1],
            [0, -2.0, 0, -0.5, 1.5]]  # fmt: skip
    head = {"kind": "trees", "features": ["cosine", "jaccard"], "init": 0.1, "trees": [tree],
            "cos_coef": 10.0, "cos_intercept": -9.0}  # fmt: skip
    v = LexicalVerifier(head, guard=False)
    same = lexical.compare("sort a list", "sort a list")  # jaccard 1.0
    other = lexical.compare("sort a list", "bake some bread now")  # jaccard 0.0
    assert v.logit(same, 0.8) == pytest.approx(0.1 - 2.0)  # cosine <= 0.9: left leaf
    assert v.logit(same, 0.95) == pytest.approx(0.1 + 1.5)  # then jaccard > 0.5: right
    assert v.logit(other, 0.95) == pytest.approx(0.1 - 0.5)
    # 1.06 clipped: below 1.0 unless the cosine is 1.0 (threshold 1.0 stops semantic hits)
    assert v.verify("sort a list", "sort a list", 0.95).score == pytest.approx(1.0 - 1e-6)
    assert v.verify("sort a list", "sort a list", 1.0).score == 1.0
    assert v.verify("sort a list", "bake some bread now", 0.95).score == pytest.approx(
        (-0.4 + 9.0) / 10.0
    )
    for bad in (
        [[0, -1], [0.5, 0], [0, -1], [1, -1], [0, 0]],  # a child not after its parent
        [[5, -1, -1], [0.5, 0, 0], [1, -1, -1], [2, -1, -1], [0, 0, 0]],  # no such feature
        [[0], [0.5, 1.0], [1], [2], [0]],  # ragged
    ):
        with pytest.raises(ValueError):
            LexicalVerifier({**head, "trees": [bad]})
    with pytest.raises(ValueError, match="kind"):
        LexicalVerifier({**head, "kind": "forest"})


def test_learned_threshold_holds_the_bound() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.8, 1.0, 4000)
    correct = rng.uniform(size=4000) < (s - 0.8) / 0.2  # P(correct) rises with the score
    t = learned_threshold(s, correct, 0.05, 30)
    assert t is not None and 0.9 < t < 1.0
    served = s >= t
    assert 1 - correct[served].mean() <= 0.05
    assert learned_threshold(s[:10], correct[:10], 0.05, 30) is None  # too little feedback
    assert learned_threshold(s, np.zeros(4000, bool), 0.05, 30) == 1.0  # nothing holds


def _candidate(db: Database, base: np.ndarray, i: int, correct: bool, sim: float) -> None:
    r = lookup(db, f"question {i}", near(base, sim, seed=1000 + i), category="chat")
    assert r.lookup_id and math.isfinite(r.score)
    db.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=correct)


def test_feedback_calibrates_the_category_threshold(db: Database) -> None:
    db.cache_set_policy("chat", tenant="a", max_false_hit_rate=0.15)  # 80 right ones show 15%
    base = emb(1)
    store(db, "the cached question", base, "answer", category="chat")
    before = db.cache_policies(tenant="a")["chat"]
    assert before.threshold == pytest.approx(0.90) and before.feedback == 0
    assert math.isnan(before.learned_threshold)
    # candidates between the floor (0.80) and 0.89 are wrong, from 0.95 up right
    for i in range(40):
        _candidate(db, base, i, correct=False, sim=0.80 + 0.09 * i / 40)
    for i in range(40, 120):
        _candidate(db, base, i, correct=True, sim=0.95 + 0.04 * (i - 40) / 80)
    after = db.cache_policies(tenant="a")["chat"]
    assert after.feedback == 120 and after.feedback_wrong == 40
    assert 0.88 < after.learned_threshold <= 0.95  # the lowest grid threshold above the wrong
    assert after.threshold == after.learned_threshold and after.calibration == "learned"
    assert db.cache_policies(tenant="b")["chat"].feedback == 0  # per tenant
    assert db.cache_stats(tenant="a").categories["chat"]["feedback_wrong"] == 40
    # the learned threshold is the one in force (the entry's own, learned from the same
    # reports, may be stricter: entry_thresholds.py); 0.88 stays a miss
    r = lookup(db, "another", near(base, 0.895, seed=7), category="chat")
    assert r.threshold == after.learned_threshold
    assert not lookup(db, "and another", near(base, 0.88, seed=8), category="chat").hit


def test_feedback_is_checked_and_counted_once(db: Database) -> None:
    base = emb(2)
    store(db, "cached", base, "answer", category="chat")
    r = lookup(db, "reworded", near(base, 0.95), category="chat")
    assert r.hit and r.lookup_id
    with pytest.raises(errors.NotFound):  # another tenant's lookup
        db.cache_feedback(tenant="b", lookup_id=r.lookup_id, correct=False)
    db.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=True)
    with pytest.raises(errors.NotFound):  # reported already
        db.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=True)
    r2 = lookup(db, "reworded again", near(base, 0.96, seed=3), category="chat")
    db.cache_feedback(tenant="a", entry_id=r2.entry_id, correct=False)  # by entry
    for bad in (
        dict(lookup_id=0),
        dict(lookup_id=1, entry_id=1),
        dict(lookup_id=-1),
        dict(lookup_id=True),
        dict(lookup_id=1, correct="yes"),
    ):
        with pytest.raises(errors.InvalidArgument):
            db.cache_feedback(tenant="a", **{"correct": True, **bad})  # type: ignore[arg-type]
    assert db.cache_policies(tenant="a")["chat"].feedback == 2


def test_calibration_survives_a_restart(tmp_path: Path) -> None:
    d = open_db(tmp_path, Clock(), calibration_min_obs=10)
    d.create_tenant("a")
    base = emb(3)
    store(d, "cached", base, category="chat")
    for i in range(30):
        _candidate(d, base, i, correct=i % 2 == 0, sim=0.93)
    learned = d.cache_policies(tenant="a")["chat"].learned_threshold
    d.close()
    d = open_db(tmp_path, Clock(), calibration_min_obs=10)
    got = d.cache_policies(tenant="a")["chat"]
    assert got.feedback == 30 and got.learned_threshold == learned
    d.drop_tenant("a")
    d.create_tenant("a")
    assert d.cache_policies(tenant="a")["chat"].feedback == 0
    d.close()


def test_verification_vetoes_near_misses_per_category(db: Database) -> None:
    base = emb(4)
    for cat in ("chat", "docs"):
        store(db, "best phone under 10k", base, f"{cat} answer", category=cat)
    db.cache_set_policy("chat", tenant="a", verify=True)
    twin = near(base, 0.99)
    vetoed = lookup(db, "best phone under 20k", twin, category="chat")
    assert not vetoed.hit and vetoed.reason == "vetoed"
    assert lookup(db, "best phone under 20k", twin, category="docs").hit  # verify off there
    ok = lookup(db, "best phone under 10k ?", twin, category="chat")
    assert ok.hit and ok.response == b"chat answer"
    assert lookup(db, "best phone under 20k", base, tenant="b", category="chat").reason == "empty"


def test_routing_serves_near_identical_prompts_across_categories(
    tmp_path: Path,
) -> None:
    clock = Clock()
    d = open_db(tmp_path, clock)
    for t in ("a", "b"):
        d.create_tenant(t)
    base = emb(5)
    store(d, "how to reset my password", base, "docs answer", category="docs", ttl_s=3600)
    twin = near(base, 0.99)
    r = lookup(d, "how do I reset my password", twin, category="chat")
    assert r.hit and r.routed_from == "docs" and r.response == b"docs answer"
    assert r.category == "chat"
    assert not lookup(d, "x", near(base, 0.95), category="chat").hit  # not near-identical
    # never across tenants, models or fingerprints
    assert not lookup(d, "how", twin, tenant="b", category="chat").hit
    assert not lookup(d, "how", twin, model="other", category="chat").hit
    assert not lookup(d, "how", twin, fingerprint="f", category="chat").hit
    # the stricter threshold of the two applies: finance (0.96 pinned) from a 0.965 twin ok,
    # but docs raised to 0.995 refuses
    assert lookup(d, "how", near(base, 0.975, seed=8), category="finance").hit
    d.cache_set_policy("docs", tenant="a", threshold=0.995, min_threshold=0.99)
    assert not lookup(d, "how", twin, category="chat").hit
    d.cache_reset_policy("docs", tenant="a")
    # finance lives 5 minutes: a 10-minute-old docs entry is too old to serve there
    clock.t += 600
    assert lookup(d, "how", twin, category="chat").hit
    assert not lookup(d, "how", twin, category="finance").hit
    # not cacheable or exact-only categories neither serve nor are served
    d.cache_set_policy("docs", tenant="a", exact_only=True)
    assert not lookup(d, "how", twin, category="chat").hit
    d.close()
