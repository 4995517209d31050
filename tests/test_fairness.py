"""Per-tenant fairness over gRPC (issue #10 item 4): one tenant's flood of thread-holding calls
(waits on a pending cache answer, big exact searches) cannot starve another tenant; its excess
calls get RESOURCE_EXHAUSTED; the admin is not limited."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator import errors
from server.fairness import TenantLimiter, default_tenant_limit
from tests.test_cache import emb
from tests.test_server import Served

pytestmark = pytest.mark.timeout(120)

THREADS = 4
WAIT_S = 2.0  # each flood call holds a worker thread this long (a wait on a pending prompt)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, threads=THREADS)
    yield s
    s.close()


def _setup(served: Served) -> tuple[str, str]:
    """Tenants "flood" and "victim", a small collection for the victim; returns their keys."""
    with served.client() as admin:
        admin.create_tenant("flood")
        admin.create_tenant("victim")
        admin.create_collection("c", dim=16)
        x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
        admin.upsert("c", np.arange(500), x, tenant="victim")
        admin.create_collection("big", dim=64)  # below train_min_vectors: exact scans
        for at in range(0, 8000, 2000):
            xb = np.random.default_rng(at).standard_normal((2000, 64)).astype(np.float32)
            admin.upsert("big", np.arange(at, at + 2000), xb, tenant="flood")
        flood_key = admin.issue_key("flood")[1]
        victim_key = admin.issue_key("victim")[1]
    with served.client(flood_key) as c:  # the flood's own pending prompt: lookups wait on it
        assert c.cache_lookup("slow", emb(1), model="m").leader
    return flood_key, victim_key


def _hold(served: Served, key: str, tenant: str | None, stop: threading.Event) -> list[str]:
    """Start waiting lookups on the pending prompt until `stop`; returns their outcomes."""
    out: list[str] = []
    with served.client(key, retries=0) as c:
        while not stop.is_set():
            try:
                c.cache_lookup("slow", emb(1), tenant=tenant, model="m", wait_s=WAIT_S)
                out.append("ok")
            except errors.ResourceExhausted as e:
                out.append(str(e))
                time.sleep(0.01)  # a client backing off; the refusal itself is immediate
    return out


def _search_big(served: Served, key: str, stop: threading.Event) -> list[str]:
    """Big exact searches (256 queries x 8,000 vectors) until `stop`; returns outcomes."""
    q = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    out: list[str] = []
    with served.client(key, retries=0) as c:
        while not stop.is_set():
            try:
                c.search("big", q, k=100)
                out.append("ok")
            except errors.ResourceExhausted as e:
                out.append(str(e))
                time.sleep(0.01)
    return out


def _latencies(served: Served, key: str, n: int) -> list[float]:
    q = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    out = []
    with served.client(key) as c:
        c.search("c", q, k=10)  # connect first
        for _ in range(n):
            t0 = time.perf_counter()
            res = c.search("c", q, k=10)
            out.append(time.perf_counter() - t0)
            assert res.found.all()
    return out


def test_flood_by_one_tenant_leaves_another_tenants_searches_fast(served: Served) -> None:
    flood_key, victim_key = _setup(served)
    unloaded = _latencies(served, victim_key, 200)
    stop = threading.Event()
    outcomes: list[list[str]] = []
    floods = [
        threading.Thread(target=lambda: outcomes.append(_hold(served, flood_key, None, stop)))
        for _ in range(3 * THREADS)
    ] + [
        threading.Thread(target=lambda: outcomes.append(_search_big(served, flood_key, stop)))
        for _ in range(2)
    ]
    for t in floods:
        t.start()
    time.sleep(0.5)  # the flood holds its threads before the victim starts
    try:
        loaded = _latencies(served, victim_key, 200)
    finally:
        stop.set()
        for t in floods:
            t.join(30)
    p99_unloaded = float(np.percentile(unloaded, 99))
    p99_loaded = float(np.percentile(loaded, 99))
    print(f"victim p99: unloaded {p99_unloaded * 1e3:.1f} ms, loaded {p99_loaded * 1e3:.1f} ms")
    # Without the limit every worker thread waits WAIT_S and the victim queues behind them.
    # The absolute slack keeps this robust on a contended 2-core machine.
    assert p99_loaded <= 3 * p99_unloaded + 0.1
    refused = [o for out in outcomes for o in out if o != "ok"]
    assert refused, "the flood was never limited"
    assert len(outcomes) == len(floods)
    limit = default_tenant_limit(THREADS)
    assert f"expected at most {limit} concurrent calls per tenant" in refused[0]
    assert "max_tenant_inflight" in refused[0]


def test_admin_is_not_limited_by_the_tenant_limit(served: Served) -> None:
    _setup(served)
    limit = default_tenant_limit(THREADS)
    results: list[Any] = []

    def wait() -> None:
        with served.client(retries=0) as admin:
            try:
                results.append(
                    admin.cache_lookup("slow", emb(1), tenant="flood", model="m", wait_s=1.0)
                )
            except errors.CuratorError as e:
                results.append(e)

    threads = [threading.Thread(target=wait) for _ in range(limit + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == limit + 1
    assert not [r for r in results if isinstance(r, Exception)]


def test_tenant_limiter_counts_and_releases() -> None:
    lim = TenantLimiter(2)
    assert lim._enter("a") and lim._enter("a")
    assert not lim._enter("a")  # a third concurrent call of "a" is refused
    assert lim._enter("b")  # other tenants are unaffected
    lim._leave("a")
    assert lim.inflight("a") == 1 and lim._enter("a")
    for t in ("a", "a", "b"):
        lim._leave(t)
    assert lim._inflight == {}
    with pytest.raises(errors.InvalidArgument, match="expected max_tenant_inflight an integer"):
        TenantLimiter(0)
    assert default_tenant_limit(1) == 1 and default_tenant_limit(8) == 4
