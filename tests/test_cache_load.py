"""The load controller: smoothing, hysteresis, stale reports, load measured from misses."""

from __future__ import annotations

import pytest

from curator import errors
from curator.cache.load import LoadConfig, LoadController
from curator.cache.policy import CATALOGUE, CategoryPolicy


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_hysteresis_enters_high_and_leaves_low() -> None:
    lc = LoadController(LoadConfig(enter=0.8, exit=0.5, smoothing=1.0), Clock())
    path = [0.7, 0.79, 0.8, 0.7, 0.6, 0.51, 0.5, 0.7, 0.79, 0.9]
    states = [lc.report("m", u).overloaded for u in path]
    # 0.7 and 0.79 stay normal; 0.8 enters; it stays overloaded down to 0.51; 0.5 leaves;
    # coming back up, 0.7 and 0.79 do not re-enter (they would have kept it on the way down)
    assert states == [False, False, True, True, True, True, False, False, False, True]
    assert lc.pressure("m") == 1.0
    lc.report("m", 0.65)
    assert lc.pressure("m") == pytest.approx(0.5)  # (0.65 - 0.5) / (0.8 - 0.5)


def test_smoothing_damps_a_spike() -> None:
    lc = LoadController(LoadConfig(enter=0.85, exit=0.6, smoothing=0.5), Clock())
    lc.report("m", 0.2)
    assert not lc.report("m", 1.2).overloaded  # EWMA 0.7: one spike does not flip it
    assert lc.report("m", 1.2).overloaded  # EWMA 0.95: sustained load does


def test_stale_report_decays_and_measured_load_takes_over() -> None:
    clock = Clock()
    lc = LoadController(LoadConfig(report_ttl_s=30, window_s=10), clock)
    lc.report("m", 2.0)
    assert lc.pressure("m") == 1.0
    clock.t = 31
    assert lc.pressure("m") == 0.0 and lc.state()["m"].source == "none"
    lc.set_capacity("m", 5.0)  # 5 requests/s at capacity
    for _ in range(45):  # 4.5 misses/s over the 10 s window: load 0.9
        lc.record_miss("m")
    assert lc.state()["m"].source == "measured"
    assert lc.state()["m"].load == pytest.approx(0.9)
    assert lc.pressure("m") > 0
    clock.t += 11  # the window empties
    assert lc.pressure("m") == 0.0


def test_policy_effective_values_respect_bounds() -> None:
    chat = CATALOGUE["chat"]
    assert chat.effective_threshold(0) == chat.threshold
    assert chat.effective_threshold(1) == pytest.approx(max(chat.min_threshold, 0.85))
    fin = CATALOGUE["finance"]
    assert fin.pinned and fin.effective_threshold(1) == fin.threshold
    assert fin.effective_ttl(fin.ttl_s, 1) <= fin.max_ttl_s
    p = CategoryPolicy(threshold=0.9, min_threshold=0.8, alpha=0.5, ttl_s=100, max_ttl_s=150)
    assert p.effective_threshold(1) == 0.8 and p.effective_ttl(100, 1) == 150
    for bad in (
        {"threshold": 0.5, "min_threshold": 0.6},
        {"ttl_s": 10, "max_ttl_s": 5},
        {"quota_entries": -1},
        {"alpha": -0.1},
    ):
        with pytest.raises(errors.InvalidArgument):
            CategoryPolicy(**bad)
    with pytest.raises(errors.InvalidArgument):
        LoadConfig(enter=0.5, exit=0.6)
