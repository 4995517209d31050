"""Hypothesis: whatever tenants, models and fingerprints store and look up, a hit only ever
returns an entry stored in the same (tenant, model, fingerprint) partition, and an exact
repeat of a live prompt always hits (against a dict model of the cache)."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from curator.cache import CacheConfig
from curator.config import DatabaseConfig
from curator.database import Database

TENANTS = ("a", "b")
MODELS = ("m1", "m2")
FINGERPRINTS = ("", "f")
# Few distinct directions: entries of different partitions are often identical vectors, so
# only the partition boundary keeps them apart.
DIRS = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))[0].astype(np.float32)


class CacheIsolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.db = Database(
            DatabaseConfig(data_dir=self.dir),
            background=False,
            cache_config=CacheConfig(sweep_every_s=0, hnsw_min=6),
        )
        for t in TENANTS:
            self.db.create_tenant(t)
        self.model: dict[tuple[str, str, str, str], bytes] = {}  # (t, m, f, prompt) -> resp
        self.n = 0

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        t=st.sampled_from(TENANTS),
        m=st.sampled_from(MODELS),
        f=st.sampled_from(FINGERPRINTS),
        d=st.integers(0, 7),
        p=st.integers(0, 5),
    )
    def store(self, t: str, m: str, f: str, d: int, p: int) -> None:
        self.n += 1
        resp = f"{t}|{m}|{f}|p{p}|{self.n}".encode()
        self.db.cache_store(f"p{p}", DIRS[d], resp, tenant=t, model=m, fingerprint=f)
        self.model[(t, m, f, f"p{p}")] = resp

    @rule(
        t=st.sampled_from(TENANTS),
        m=st.sampled_from(MODELS),
        f=st.sampled_from(FINGERPRINTS),
        d=st.integers(0, 7),
        p=st.integers(0, 7),
    )
    def lookup(self, t: str, m: str, f: str, d: int, p: int) -> None:
        r = self.db.cache_lookup(f"p{p}", DIRS[d], tenant=t, model=m, fingerprint=f)
        if r.hit:
            assert r.response is not None
            rt, rm, rf, _, _ = r.response.decode().split("|")
            assert (rt, rm, rf) == (t, m, f)
            assert r.response in self.model.values()
        if (t, m, f, f"p{p}") in self.model:
            assert r.hit and r.reason == "exact"
            assert r.response == self.model[(t, m, f, f"p{p}")]

    @rule(t=st.sampled_from(TENANTS), f=st.sampled_from(FINGERPRINTS))
    def invalidate(self, t: str, f: str) -> None:
        n = self.db.cache_invalidate(tenant=t, fingerprint=f)
        gone = [k for k in self.model if k[0] == t and k[2] == f]
        assert n == len(gone)
        for k in gone:
            del self.model[k]

    @invariant()
    def counts_match(self) -> None:
        for t in TENANTS:
            n = sum(1 for k in self.model if k[0] == t)
            assert self.db.cache_stats(tenant=t).entries == n
            # the running totals quota checks read agree with the entries themselves
            key = self.db._cache_tenant(t)  # the cache keys tenants by their stable id
            total_n, total_b = self.db.cache.ledger.tenant_totals.get(key, (0, 0))
            assert total_n == n
            assert total_b == sum(
                m.size for m in self.db.cache._metas.values() if m.key.tenant == key
            )


CacheIsolation.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestCacheIsolation = CacheIsolation.TestCase
