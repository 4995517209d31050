"""Cache hardening (issue 10, items 4 and 12): waits that end with their caller, and the
races of the cache bookkeeping, each replayed with a forced interleaving."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from curator.cache.classifier import CentroidClassifier
from curator.database import Database
from tests.test_cache import Clock, emb, lookup, near, open_db, store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = open_db(tmp_path, Clock(), max_wait_s=0.5)
    d.create_tenant("a")
    yield d
    d.close()


def test_a_wait_ends_when_the_caller_goes_away(db: Database) -> None:
    e = emb(1)
    assert lookup(db, "slow", e).leader
    gone = threading.Event()
    threading.Timer(0.1, gone.set).start()
    t0 = time.monotonic()
    r = lookup(db, "slow", e, wait_s=0.4, active=lambda: not gone.is_set())
    assert r.reason == "pending" and time.monotonic() - t0 < 0.35


def test_waits_are_capped_by_max_wait_s(db: Database) -> None:
    e = emb(2)
    assert lookup(db, "slow", e).leader
    t0 = time.monotonic()
    assert lookup(db, "slow", e, wait_s=30).reason == "pending"  # cut to 0.5 s
    assert 0.4 < time.monotonic() - t0 < 5


def test_a_wait_over_the_wire_ends_at_the_deadline(tmp_path: Path) -> None:
    from tests.test_server import Served

    served = Served(tmp_path)
    try:
        with served.client() as admin:
            admin.create_tenant("a")
            e = emb(3)
            assert admin.cache_lookup("slow", e, tenant="a", model="m").leader
            from curator_api import convert
            from curator_api.v1 import curator_pb2 as pb

            req = pb.CacheLookupRequest(tenant="a", model="m", prompt="slow", wait_s=20,
                                        embedding=convert.encode_vector(e))  # fmt: skip
            t0 = time.monotonic()
            try:  # the server stops waiting at the deadline: the reply may just make it
                reply = admin._stubs["Cache"].Lookup(req, timeout=0.5, metadata=admin._metadata)
                assert reply.reason == "pending"
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # the server's worker returns soon after the deadline, not after wait_s (20 s)
            while time.monotonic() - t0 < 10:
                counters = served.db.cache_stats(tenant="a").categories["general"]
                if counters.get("miss_pending"):
                    break
                time.sleep(0.05)
            assert counters.get("miss_pending") == 1 and time.monotonic() - t0 < 5
    finally:
        served.close()


def test_no_hit_is_lost_between_a_lookup_and_the_write_back(db: Database) -> None:
    base = emb(4)
    stored = store(db, "q", base, "r")
    ledger = db.cache.ledger
    # forced interleaving: a hit is counted while the write-back holds the hit lock
    ledger._hits.acquire()
    hitter = threading.Thread(target=lambda: lookup(db, "q", base))
    flusher = threading.Thread(target=db.cache._flush_hits)
    hitter.start()
    flusher.start()
    time.sleep(0.1)
    assert hitter.is_alive() and flusher.is_alive()  # both wait for the lock
    ledger._hits.release()
    hitter.join(5)
    flusher.join(5)
    db.cache._flush_hits()
    # and a soak: many hits racing many write-backs, switching threads as often as possible
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=lambda: [lookup(db, "q", near(base, 0.99)) for _ in range(50)])
            for _ in range(4)
        ] + [threading.Thread(target=lambda: [db.cache._flush_hits() for _ in range(50)])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    db.cache._flush_hits()
    assert ledger.metas[stored.entry_id].hits == 201
    assert next(db.cache.entries(db._cache_tenant("a"))).hits == 201  # every hit written back


def test_a_classifier_view_never_outlives_new_examples(monkeypatch: Any) -> None:
    clf = CentroidClassifier(min_similarity=0.0)
    x = np.eye(4, dtype=np.float32)
    clf.add("t", "a", x[:1])
    build = clf._build_view
    adder: list[threading.Thread] = []
    blocked: list[bool] = []

    def build_while_adding(tenant: str, dim: int) -> Any:
        # another thread teaches a new category while the view is being built
        t = threading.Thread(target=clf.add, args=("t", "b", x[1:2]))
        t.start()
        t.join(0.2)
        adder.append(t)
        blocked.append(t.is_alive())  # the add waits for the classification to finish
        return build(tenant, dim)

    monkeypatch.setattr(clf, "_build_view", build_while_adding)
    assert clf.classify("t", x[1]) == ("a", 0.0)  # the view of before the add
    assert blocked == [True]
    adder[0].join(5)
    monkeypatch.setattr(clf, "_build_view", build)
    assert clf.classify("t", x[1]) == ("b", 1.0)  # the stale view did not stick


def test_policy_names_are_listed_while_policies_are_added(db: Database) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors: list[BaseException] = []

    def lister() -> None:
        try:
            for _ in range(300):
                db.cache_policies(tenant="a")
        except BaseException as e:  # a dict changed size during iteration
            errors.append(e)

    try:
        t = threading.Thread(target=lister)
        t.start()
        for i in range(60):
            db.cache_set_policy(f"cat{i}", tenant="a", threshold=0.9)
        t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not errors
    assert {f"cat{i}" for i in range(60)} <= set(db.cache_policies(tenant="a"))
