"""The learned state of the cache: the calibration fit (fixed-sequence, a conservative bound,
`bound_unreachable`), per-entry thresholds, and both visible in `cache_policies` on every
surface (in-process, gRPC through both SDKs, HTTP) and in the metrics (per category only)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from client import Client
from client.aio import AsyncClient
from curator.cache.calibration import GRID, applied, fit, wilson_upper
from curator.database import Database
from curator_api import jsonwire as jw
from server.__main__ import cache_state
from server.metrics import CacheState
from tests.test_cache import Clock, emb, lookup, near, open_db, store
from tests.test_server import ADMIN


def test_fit_states() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.8, 1.0, 4000)
    ok = rng.uniform(size=4000) < (s - 0.8) / 0.2
    assert fit(s, ok, 0.0, 30).state == "off" and fit(s, ok, 0.0, 30).threshold is None
    assert fit(s[:20], ok[:20], 0.05, 30).state == "learning"
    got = fit(s, ok, 0.10, 30)
    assert got.state == "learned" and got.threshold is not None
    served = s >= got.threshold
    assert got.served == served.sum() and got.wrong == (~ok[served]).sum()
    assert got.estimate == pytest.approx(1 - ok[served].mean())
    assert got.bound <= 0.10 and got.bound > got.estimate  # an upper bound
    assert got.served >= 30
    # a share of wrong answers at every score: no threshold holds 2%, the fit says so and
    # says which bound the feedback could support
    noisy = rng.uniform(size=4000) < 0.8
    out = fit(s, noisy, 0.02, 30)
    assert out.state == "bound_unreachable" and out.threshold == 1.0
    assert 0.1 < out.best_bound < 0.45 and math.isnan(out.bound)
    assert fit(s, noisy, out.best_bound + 1e-9, 30).state == "learned"


def test_fit_is_monotone_in_delta_and_corrects_for_the_grid() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(0.8, 1.0, 3000)
    ok = rng.uniform(size=3000) < 0.5 + 2.5 * (s - 0.8)  # right more often higher up
    got = [fit(s, ok, d, 30) for d in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)]
    assert all(f.threshold is not None for f in got)
    for policy in (0.80, 0.90, 0.95, 0.99):  # a looser bound never serves less
        thresholds = [applied(f, policy) for f in got]
        assert thresholds == sorted(thresholds, reverse=True)
        assert all(t == 1.0 or t in GRID or t == policy for t in thresholds)
    learned = [f.threshold for f in got if f.state == "learned"]
    assert learned == sorted(learned, reverse=True)
    assert sum(f.state == "learned" for f in got) >= 3
    f = next(f for f in got if f.state == "learned")
    plain = wilson_upper(np.array([f.wrong], float), np.array([f.served], float))[0]
    assert f.bound > plain  # the bound is corrected for testing every grid threshold
    assert f.estimate < f.bound


def _feedback(db: Any, base: np.ndarray, n: int, tenant: str = "a", category: str = "chat") -> None:
    """n scored candidates of one entry: wrong below 0.89, right from 0.95 up."""
    for i in range(n):
        right = i % 3 != 0
        sim = 0.95 + 0.04 * i / n if right else 0.81 + 0.07 * i / n
        r = db.cache_lookup(
            f"question {i}", near(base, sim, seed=500 + i), tenant=tenant, model="m",
            category=category,
        )  # fmt: skip
        assert r.lookup_id
        db.cache_feedback(tenant=tenant, lookup_id=r.lookup_id, correct=right)


def test_policy_state_shows_the_learned_state(tmp_path: Path) -> None:
    db = open_db(tmp_path, Clock(), calibration_min_obs=10)
    try:
        db.create_tenant("a")
        before = db.cache_policies(tenant="a")["chat"]
        assert (before.calibration, before.feedback_served, before.entries_with_feedback) == (
            "learning",
            0,
            0,
        )
        assert math.isnan(before.false_hit_bound) and math.isnan(before.entry_threshold_min)
        # 60 right answers cannot show 5% with 95% confidence over the grid; 15% they can
        db.cache_set_policy("chat", tenant="a", max_false_hit_rate=0.15)
        base = emb(21)
        eid = store(db, "the cached question", base, category="chat").entry_id
        _feedback(db, base, 90)
        st = db.cache_policies(tenant="a")["chat"]
        assert st.calibration == "learned" and st.feedback == 90 and st.feedback_wrong == 30
        assert 0.87 < st.learned_threshold <= 0.95 and st.threshold == st.learned_threshold
        assert st.feedback_served == 60 and st.false_hit_estimate == 0.0
        assert 0 < st.false_hit_bound <= st.policy.max_false_hit_rate
        assert st.supported_delta <= st.false_hit_bound
        # the entry's own cut, from its last 64 observations (21 of them wrong)
        wrong = sum(1 for i in range(90 - 64, 90) if i % 3 == 0)
        entry = (st.entries_with_feedback, st.entry_feedback, st.entry_feedback_wrong)
        assert entry == (1, 64, wrong)
        own = db.cache.entry_thresholds.threshold(eid, st.threshold, 0.15)
        assert st.entry_threshold_min == st.entry_threshold_max == own
        assert st.entries_raised + st.entries_lowered == (own != st.threshold)
        assert db.cache_policies(tenant="a")["docs"].entries_with_feedback == 0  # per category
        # a bound the feedback cannot show held yet, and nothing shows it broken at the
        # policy's threshold (the wrong answers are all below 0.89): the policy's stands
        db.cache_set_policy("chat", tenant="a", max_false_hit_rate=0.01)
        st = db.cache_policies(tenant="a")["chat"]
        assert st.calibration == "learning" and st.threshold == pytest.approx(0.90)
        assert st.supported_delta > 0.01
        # wrong answers high up: 1% shown broken at every cut the feedback covers: no
        # semantic hits, and the state says so
        for i in range(12):
            r = db.cache_lookup(
                f"other question {i}", near(base, 0.975 + 0.015 * i / 12, seed=900 + i),
                tenant="a", model="m", category="chat",
            )  # fmt: skip
            db.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=False)
        st = db.cache_policies(tenant="a")["chat"]
        assert (st.calibration, st.threshold, st.feedback_served) == ("bound_unreachable", 1.0, 0)
        assert st.entries_refusing == 1  # follows its category
        assert not lookup(db, "close", near(base, 0.99, seed=3), category="chat").hit
        db.cache_set_policy("chat", tenant="a", max_false_hit_rate=0.0)
        st = db.cache_policies(tenant="a")["chat"]
        assert st.calibration == "off" and st.threshold == pytest.approx(0.90)
    finally:
        db.close()


def test_learned_state_is_the_same_on_every_surface(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the HTTP API needs the http extra")
    from tests.test_http import Live, call

    live = Live(tmp_path)
    try:
        with Client(live.grpc, ADMIN, timeout=20) as c:
            c.create_tenant("a")
            c.cache_set_policy("chat", tenant="a", max_false_hit_rate=0.15)
            base = emb(22)
            c.cache_store("the cached question", base, b"r", tenant="a", model="m", category="chat")
            _feedback(c, base, 90)
            r = c.cache_lookup("one more", near(base, 0.97, seed=9), tenant="a", model="m",
                               category="chat")  # fmt: skip
            fb = c.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=True)
            over_grpc = c.cache_policies(tenant="a")
        assert fb["calibration"] == "learned" and fb["feedback"] == 91
        assert fb["entry_feedback"] == 64 and math.isfinite(fb["entry_threshold"])
        assert fb["feedback_served"] > 0 and fb["false_hit_bound"] <= 0.15

        async def over_aio() -> Any:
            async with AsyncClient(live.grpc, ADMIN, timeout=20) as a:
                return await a.cache_policies(tenant="a")

        in_process = live.db.cache_policies(tenant="a")
        chat = in_process["chat"]
        assert chat.calibration == "learned" and chat.entries_with_feedback == 1
        expected = jw.to_json(in_process)
        assert jw.to_json(over_grpc) == expected
        assert jw.to_json(asyncio.run(over_aio())) == expected
        status, got = call(live.base, "GET", "/v1/cache/policies?tenant=a")
        assert status == 200 and got["categories"] == expected
        assert got["categories"]["chat"]["calibration"] == "learned"
        assert got["categories"]["general"]["false_hit_bound"] is None  # nan -> null
    finally:
        live.close()


def test_metrics_sum_the_learned_state_per_category(tmp_path: Path) -> None:
    db: Database = open_db(tmp_path, Clock(), calibration_min_obs=10)
    try:
        for t in ("tenant-one", "tenant-two"):
            db.create_tenant(t)
        db.cache_set_policy("chat", max_false_hit_rate=0.15)  # database-wide
        for t, seed in (("tenant-one", 31), ("tenant-two", 32)):
            base = emb(seed)
            store(db, "cached", base, tenant=t, category="chat")
            _feedback(db, base, 90, tenant=t)
        db.cache_set_policy(
            "support-desk", tenant="tenant-one", threshold=0.9, min_threshold=0.85
        )  # fmt: skip
        base = emb(33)
        store(db, "cached", base, tenant="tenant-one", category="support-desk")
        _feedback(db, base, 12, tenant="tenant-one", category="support-desk")
        db.cache_set_policy("support-desk", tenant="tenant-one", max_false_hit_rate=0.01)
        reg = CollectorRegistry()
        reg.register(CacheState(lambda: cache_state(db)))
        text = generate_latest(reg).decode()
    finally:
        db.close()
    assert 'curator_cache_calibrations{category="chat",state="learned"} 2.0' in text
    assert 'curator_cache_calibration_feedback{category="chat",outcome="wrong"} 60.0' in text
    assert 'curator_cache_entry_thresholds{category="chat",state="with_feedback"} 2.0' in text
    # each entry keeps its last 64 observations, 21 of them wrong
    assert 'curator_cache_entry_feedback{category="chat",outcome="correct"} 86.0' in text
    assert 'curator_cache_learned_threshold{category="chat",stat="min"}' in text
    assert 'curator_cache_false_hit_bound{category="chat"}' in text
    # a tenant's own category is folded into "other", its state counted there
    assert 'curator_cache_calibrations{category="other",state="bound_unreachable"} 1.0' in text
    assert "support-desk" not in text and "tenant-one" not in text


def test_entry_thresholds_are_memoised_until_the_next_report(tmp_path: Path) -> None:
    db = open_db(tmp_path, Clock(), calibration_min_obs=10)
    try:
        et = db.cache.entry_thresholds
        assert et.threshold(7, 0.9, 0.05) == 0.9  # no feedback: the category's
        et.record(7, 0.95, False)
        first = et.threshold(7, 0.9, 0.05)
        assert 0.95 < first < 0.951 and et.threshold(7, 0.9, 0.05) == first  # memoised
        assert et.threshold(7, 0.96, 0.05) == 0.96  # another base: computed again
        et.record(7, 0.97, False)  # a new report: never the memoised value
        assert 0.97 < et.threshold(7, 0.9, 0.05) < 0.971
        et.forget([7])
        assert et.threshold(7, 0.9, 0.05) == 0.9
    finally:
        db.close()
