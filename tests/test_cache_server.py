"""The semantic cache over gRPC: congruence with the in-process Database, tenant isolation
and admin-only calls, bad input mapped to status codes, metrics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from client.calls import Call, Plan
from curator import errors
from curator.config import DatabaseConfig
from curator.database import Database
from server.__main__ import cache_state
from server.metrics import CacheState
from tests.test_cache import Clock, emb, near
from tests.test_server import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def _scenario(api: Any, admin_load: Any) -> list[Any]:
    """The same cache calls in-process and over the wire; returns what is observable."""
    out: list[Any] = []
    e = [emb(i) for i in range(6)]
    out.append(api.cache_lookup("q0", e[0], tenant="a", model="m").reason)
    s = api.cache_store("q0", e[0], b"r0", tenant="a", model="m", category="code", tokens=5)
    out.append((s.entry_id, s.evicted, s.stored))
    api.cache_store("q1", e[1], "r1", tenant="a", model="m", fingerprint="f", category="chat")
    api.cache_store("q2", e[2], b"r2", tenant="b", model="m", category="news", ttl_s=60)
    out.append(api.cache_store("p", e[3], b"x", tenant="a", model="m", category="personal"))
    for args in (
        ("q0", e[0], "a", "", None),
        ("Q0 ", near(e[0], 0.2), "a", "", "code"),
        ("q0 again", near(e[0], 0.97), "a", "", "code"),
        ("q0 again", near(e[0], 0.97), "b", "", "code"),
        ("q1?", near(e[1], 0.93), "a", "f", "chat"),
        ("q1?", near(e[1], 0.93), "a", "", "chat"),
        ("secret", e[3], "a", "", "personal"),
    ):
        prompt, vec, tenant, fp, cat = args
        r = api.cache_lookup(prompt, vec, tenant=tenant, model="m", fingerprint=fp, category=cat)
        sim = None if math.isnan(r.similarity) else round(r.similarity, 5)
        out.append((r.hit, r.reason, r.response, sim, r.category, r.category_source, r.threshold))
    out.append(api.cache_set_policy("chat", tenant="a", threshold=0.8, min_threshold=0.7))
    out.append(api.cache_set_policy("support", tenant=None, threshold=0.85, min_threshold=0.8))
    out.append(api.cache_add_examples("code", np.stack([e[0], e[4]]), tenant="a"))
    r = api.cache_lookup("unlabelled", near(e[0], 0.9), tenant="a", model="m")
    out.append((r.category, r.category_source))
    admin_load("m", 0.99)
    pol = api.cache_policies(tenant="a", model="m")
    out.append({c: (st.threshold, st.ttl_s, st.pressure) for c, st in pol.items()})
    out.append(api.cache_invalidate(tenant="a", category="code"))
    stats = api.cache_stats(tenant="a")
    out.append((stats.entries, stats.partitions, sorted(stats.categories)))
    out.append(api.cache_stats(tenant="a").categories["chat"])
    for call in (
        lambda: api.cache_lookup("", e[0], tenant="a", model="m"),
        lambda: api.cache_lookup("q", e[0][:4], tenant="a", model="m"),
        lambda: api.cache_lookup("q", e[0], tenant="a", model="m", category="nope"),
        lambda: api.cache_lookup("q", e[0], tenant="zed", model="m"),
        lambda: api.cache_store("q", e[0], b"r", tenant="a", model="m", ttl_s=-1),
        lambda: api.cache_set_policy("chat", tenant="a", threshold=3.0),
    ):
        try:
            call()
            out.append("no error")
        except errors.CuratorError as ex:
            out.append(type(ex).__name__)
    return out


def test_congruence_in_process_and_over_the_wire(tmp_path: Path, served: Served) -> None:
    clock = Clock()
    local = Database(DatabaseConfig(data_dir=str(tmp_path / "local")), background=False)
    local.cache.clock = clock  # entry ids and TTLs do not depend on the wall clock here
    for t in ("a", "b"):
        local.create_tenant(t)
    got_local = _scenario(local, local.cache_report_load)
    local.close()
    with served.client() as admin:
        for t in ("a", "b"):
            admin.create_tenant(t)
        got_wire = _scenario(admin, admin.cache_report_load)
    assert len(got_local) == len(got_wire)
    for a, b in zip(got_local, got_wire, strict=True):
        assert a == b


def test_tenant_keys_are_isolated_and_load_is_admin_only(served: Served) -> None:
    with served.client() as admin:
        for t in ("a", "b"):
            admin.create_tenant(t)
        _, key_a = admin.issue_key("a")
        _, key_b = admin.issue_key("b")
        e = emb(7)
        with served.client(key_a) as a, served.client(key_b) as b:
            a.cache_store("shared prompt", e, b"a's answer", model="m")
            assert a.cache_lookup("shared prompt", e, model="m").hit
            r = b.cache_lookup("shared prompt", e, model="m")
            assert not r.hit and r.reason == "empty"
            for call in (
                lambda: b.cache_lookup("shared prompt", e, tenant="a", model="m"),
                lambda: b.cache_store("x", e, b"y", tenant="a", model="m"),
                lambda: b.cache_invalidate(tenant="a"),
                lambda: b.cache_set_policy("chat", tenant="a", threshold=0.5, min_threshold=0.4),
                lambda: b.cache_stats(tenant="a"),
                lambda: b.cache_report_load("m", 0.99),
                lambda: b.cache_set_capacity("m", 10),
            ):
                with pytest.raises(errors.PermissionDenied):
                    call()
            assert b.cache_invalidate() == 0
            assert a.cache_lookup("shared prompt", e, model="m").hit
            assert b.cache_stats().entries == 0 and a.cache_stats().entries == 1
        with pytest.raises(errors.InvalidArgument, match="tenant"):
            admin.cache_lookup("q", e, model="m")  # the admin must name a tenant
        assert admin.cache_lookup("shared prompt", e, tenant="a", model="m").hit


def _one(call: Call) -> Plan[Any]:
    return (yield call)


def test_malformed_embedding_bytes(served: Served) -> None:
    from curator_api.v1 import curator_pb2 as pb

    with served.client() as admin:
        admin.create_tenant("a")
        req = pb.CacheLookupRequest(tenant="a", model="m", prompt="q", embedding=b"\x00" * 7)
        with pytest.raises(errors.InvalidArgument, match="float32"):
            admin._run(_one(Call("Cache", "Lookup", req)))


def test_cache_metrics(served: Served) -> None:
    db = served.db
    db.create_tenant("a")
    db.cache_store("q", emb(1), b"r", tenant="a", model="m", category="chat")
    db.cache_lookup("q", emb(1), tenant="a", model="m", category="chat")
    db.cache_lookup("z", emb(2), tenant="a", model="m", category="chat")
    db.cache_report_load("m", 0.95)
    reg = CollectorRegistry()
    reg.register(CacheState(lambda: cache_state(db)))
    text = generate_latest(reg).decode()
    assert 'curator_cache_events_total{category="chat",event="hit_exact"} 1.0' in text
    assert 'curator_cache_events_total{category="chat",event="miss_below_threshold"} 1.0' in text
    assert 'curator_cache_entries{category="chat"} 1.0' in text
    assert 'curator_model_pressure{model="m"} 1.0' in text
    assert 'curator_cache_threshold{category="chat",model="m"} 0.85' in text
    assert 'curator_cache_threshold{category="finance",model="m"} 0.96' in text  # pinned


def test_wait_for_pending_over_the_wire(served: Served) -> None:
    import threading
    import time

    with served.client() as admin:
        admin.create_tenant("a")
        e = emb(9)
        assert admin.cache_lookup("slow", e, tenant="a", model="m").leader
        result: list[Any] = []
        t = threading.Thread(
            target=lambda: result.append(
                admin.cache_lookup("slow", e, tenant="a", model="m", wait_s=10)
            )
        )
        t.start()
        time.sleep(0.5)  # the waiting lookup is in flight before the answer is stored
        assert not result  # it waits: it neither returned "pending" nor hit yet
        admin.cache_store("slow", e, b"done", tenant="a", model="m")
        t.join(20)
        assert result and result[0].hit and result[0].response == b"done"


def test_client_imports_no_heavy_modules_for_cache() -> None:
    import subprocess
    import sys

    code = (
        "import sys, client; c = client.Client; "
        "bad = [m for m in ('faiss', 'hnswlib', 'lmdb', 'numba') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_feedback_over_the_wire(served: Served) -> None:
    from curator import errors
    from tests.test_cache import near

    with served.client() as admin:
        admin.create_tenant("a")
        admin.create_tenant("b")
        e = emb(11)
        admin.cache_store("q", e, b"r", tenant="a", model="m", category="chat")
        r = admin.cache_lookup("q again", near(e, 0.95), tenant="a", model="m", category="chat")
        assert r.hit and r.lookup_id and r.score == pytest.approx(r.similarity)
        with pytest.raises(errors.NotFound):
            admin.cache_feedback(tenant="b", lookup_id=r.lookup_id, correct=False)
        got = admin.cache_feedback(tenant="a", lookup_id=r.lookup_id, correct=False)
        assert got["category"] == "chat" and got["feedback"] == 1
        assert got["feedback_wrong"] == 1
        with pytest.raises(errors.InvalidArgument):
            admin.cache_feedback(tenant="a", lookup_id=-1, correct=True)
        state = admin.cache_policies(tenant="a")["chat"]
        assert state.feedback == 1 and math.isnan(state.learned_threshold)
        admin.cache_set_policy("chat", tenant="a", verify=True, max_false_hit_rate=0.02)
        policy = admin.cache_policies(tenant="a")["chat"].policy
        assert policy.verify and policy.max_false_hit_rate == 0.02
