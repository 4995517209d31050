"""bench.cache_quality's replay on a hand-made stream (the real run needs qqp-dev and the
embed extra): nearest earlier neighbours, hits, correctness by answer id, routing."""

from __future__ import annotations

import numpy as np

from bench.cache_quality import Stream, neighbours, simulate
from tests.test_cache import emb, near


def test_neighbours_are_earlier_and_sorted() -> None:
    x = np.stack([emb(i) for i in range(50)])
    pos, sim = neighbours(x, 4, block=7)
    assert (pos[0] == -1).all()
    for i in range(1, 50):
        full = x[:i] @ x[i]
        want = np.sort(full)[::-1][:4]
        got = sim[i][pos[i] >= 0]
        assert np.allclose(got, want[: len(got)], atol=1e-5)
        assert (pos[i][pos[i] >= 0] < i).all()


def _stream(cats: list[int]) -> Stream:
    base = emb(1)
    other = emb(2)
    x = np.stack([base, near(base, 0.95, 5), near(base, 0.99, 6), other])
    texts = ["how to sort a list", "how do I sort a list", "sorting a list how", "bake bread"]
    pos, sim = neighbours(x, 4)
    return Stream(np.arange(4), np.array(cats), np.array([0, 0, 1, 2]), texts, pos, sim)


def test_replay_counts_hits_and_their_correctness() -> None:
    s = _stream([0, 0, 0, 0])
    run = simulate(s, "t", lambda i, c: 0.9, None)
    assert [(i, j) for i, j, _ in run.hits] == [(1, 0), (2, 0)]
    m = run.metrics(s)
    assert m["hits"] == 2 and m["correct_hit_rate"] == 0.25 and m["false_hit_share"] == 0.5
    strict = simulate(s, "t", lambda i, c: 0.97, None)
    assert [(i, j) for i, j, _ in strict.hits] == [(2, 0)]
    fb = [(i, round(sc, 2), ok) for i, _, sc, ok in run.feedback]
    assert fb == [(1, 0.95, True), (2, 0.99, False)]  # what calibration learns from


def test_routing_serves_near_identical_prompts_of_another_topic() -> None:
    s = _stream([0, 1, 1, 0])
    plain = simulate(s, "t", lambda i, c: 0.9, None)
    routed = simulate(s, "t", lambda i, c: 0.9, None, route=True)
    assert [(i, j) for i, j, _ in plain.hits] == [(2, 1)]  # 2 and 0 are split by topic
    assert routed.routed == 0  # 2's own topic had a hit already
    s = _stream([0, 1, 0, 0])
    routed = simulate(s, "t", lambda i, c: 0.9, None, route=True)
    assert routed.routed == 0 and [(i, j) for i, j, _ in routed.hits] == [(2, 0)]
    s = _stream([1, 0, 0, 0])  # 2's only near-identical twin (0, at 0.99) is in topic 1
    s.pos[2], s.sim[2] = np.array([0, -1, -1, -1]), np.array([0.99, -np.inf, -np.inf, -np.inf])
    plain = simulate(s, "t", lambda i, c: 0.9, None)
    routed = simulate(s, "t", lambda i, c: 0.9, None, route=True)
    assert (2, 0) not in [(i, j) for i, j, _ in plain.hits]
    assert routed.routed == 1 and (2, 0) in [(i, j) for i, j, _ in routed.hits]


def test_noise_floor_reports_the_labels_false_share_and_the_supported_delta() -> None:
    from bench.cache_calibration import noise_floor

    rng = np.random.default_rng(0)
    s = rng.uniform(0.9, 1.0, 2000)
    ok = rng.uniform(size=2000) >= 0.1  # a tenth wrong at every score: label noise
    fb = [(i, i % 6, float(v), bool(k)) for i, (v, k) in enumerate(zip(s, ok, strict=True))]
    out = noise_floor(fb)
    assert out[">=0.99"]["n"] == (s >= 0.99).sum()
    assert out[">=0.99"]["false"] == 1 - ok[s >= 0.99].mean()
    assert out[">=0.999"]["n"] < out[">=0.95"]["n"]
    # no cut does better than the noise: the least supportable delta sits near it (a minimum
    # over many cuts, so it can dip a little below the true 10%)
    assert 0.08 < out["supported_delta"] < 0.2
    assert all(0.05 < b < 0.3 for b in out["supported_delta_by_topic"].values())
