"""The whole Database as a hypothesis state machine against a plain model: upserts, deletes,
grants, revokes (by the owner and by the grantee), tenants dropped and re-created under the
same name, collections dropped and re-created, cache stores/lookups/invalidations, snapshots
and reopening (cleanly, and without the closing snapshot as after a kill). After every step
each tenant reads exactly what the model says, in every collection."""

from __future__ import annotations

import shutil
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from curator.config import DatabaseConfig, IndexConfig, SearchParams
from curator.database import Database
from curator.errors import NotFound

TENANTS = ["a", "b", "c"]
COLLS = ["x", "y"]
IDS = st.integers(0, 30)
DIM = 4
EXACT = SearchParams(exact_search_threshold=10_000)
CFG = IndexConfig(train_min_vectors=40, max_sl_size=4, branching=4, max_leaf_size=8)


def vec(owner: str, i: int) -> np.ndarray:
    seed = zlib.crc32(f"{owner}/{i}".encode())
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class DatabaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="curator-sm-")
        self.db = Database(DatabaseConfig(data_dir=self.dir), background=False)
        self.tenants: set[str] = set()
        self.colls: set[str] = set()
        # model: coll -> (owner, id) -> readers
        self.access: dict[str, dict[tuple[str, int], set[str]]] = {}
        self.cache: dict[str, set[str]] = {}  # tenant -> prompts stored

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- tenants and collections -----------------------------------------------------------
    @rule(t=st.sampled_from(TENANTS))
    def create_tenant(self, t: str) -> None:
        if t in self.tenants:
            return
        self.db.create_tenant(t)
        self.tenants.add(t)
        for other in TENANTS:  # sharing is allowed by the admin between all model tenants
            if other in self.tenants and other != t:
                self.db.allow_sharing(t, other)
                self.db.allow_sharing(other, t)

    @precondition(lambda self: bool(self.tenants))
    @rule(data=st.data())
    def drop_tenant(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(sorted(self.tenants)))
        self.db.drop_tenant(t)
        self.tenants.discard(t)
        self.cache.pop(t, None)
        for acc in self.access.values():
            for key in [k for k in acc if k[0] == t]:
                del acc[key]
            for readers in acc.values():
                readers.discard(t)

    @rule(c=st.sampled_from(COLLS))
    def create_collection(self, c: str) -> None:
        if c not in self.colls:
            self.db.create_collection(c, DIM, "l2", CFG)
            self.colls.add(c)
            self.access[c] = {}

    @precondition(lambda self: bool(self.colls))
    @rule(data=st.data())
    def drop_collection(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(sorted(self.colls)))
        self.db.drop_collection(c)
        self.colls.discard(c)
        del self.access[c]

    # -- vectors ---------------------------------------------------------------------------
    @precondition(lambda self: self.tenants and self.colls)
    @rule(data=st.data(), ids=st.lists(IDS, min_size=1, max_size=8, unique=True))
    def upsert(self, data: st.DataObject, ids: list[int]) -> None:
        t = data.draw(st.sampled_from(sorted(self.tenants)))
        c = data.draw(st.sampled_from(sorted(self.colls)))
        self.db.upsert(
            c, ids, np.stack([vec(t, i) for i in ids]), [f"{t}{i}" for i in ids], tenant=t
        )
        for i in ids:
            self.access[c][(t, i)] = {t}

    @precondition(lambda self: self.tenants and self.colls)
    @rule(data=st.data(), ids=st.lists(IDS, min_size=1, max_size=8))
    def delete(self, data: st.DataObject, ids: list[int]) -> None:
        t = data.draw(st.sampled_from(sorted(self.tenants)))
        c = data.draw(st.sampled_from(sorted(self.colls)))
        n = self.db.delete(c, ids, tenant=t).count
        assert n == len({i for i in ids if (t, i) in self.access[c]})
        for i in ids:
            self.access[c].pop((t, i), None)

    @precondition(lambda self: len(self.tenants) >= 2 and self.colls)
    @rule(data=st.data(), ids=st.lists(IDS, min_size=1, max_size=6), grant=st.booleans())
    def share(self, data: st.DataObject, ids: list[int], grant: bool) -> None:
        owner, to = data.draw(st.permutations(sorted(self.tenants)))[:2]
        c = data.draw(st.sampled_from(sorted(self.colls)))
        acc = self.access[c]
        if any((owner, i) not in acc for i in ids):
            with pytest.raises(NotFound):
                (self.db.grant if grant else self.db.revoke)(c, ids, to, tenant=owner)
            return
        (self.db.grant if grant else self.db.revoke)(c, ids, to, tenant=owner)
        for i in ids:
            (acc[(owner, i)].add if grant else acc[(owner, i)].discard)(to)

    @precondition(lambda self: len(self.tenants) >= 2 and self.colls)
    @rule(data=st.data())
    def grantee_drops_a_share(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(sorted(self.colls)))
        shares = sorted((k, r) for k, rs in self.access[c].items() for r in rs if r != k[0])
        if not shares:
            return
        (owner, i), reader = data.draw(st.sampled_from(shares))
        assert self.db.revoke(c, [i], reader, tenant=reader, owner=owner).count == 1
        self.access[c][(owner, i)].discard(reader)

    # -- cache -----------------------------------------------------------------------------
    @precondition(lambda self: bool(self.tenants))
    @rule(data=st.data(), p=st.integers(0, 5))
    def cache_store(self, data: st.DataObject, p: int) -> None:
        t = data.draw(st.sampled_from(sorted(self.tenants)))
        self.db.cache_store(f"prompt {p}", vec("cache", p), f"{t}:{p}", tenant=t, model="m")
        self.cache.setdefault(t, set()).add(f"prompt {p}")

    @precondition(lambda self: bool(self.tenants))
    @rule(data=st.data())
    def cache_invalidate(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(sorted(self.tenants)))
        assert self.db.cache_invalidate(tenant=t) == len(self.cache.pop(t, set()))

    # -- durability ------------------------------------------------------------------------
    @precondition(lambda self: bool(self.colls))
    @rule(data=st.data())
    def snapshot(self, data: st.DataObject) -> None:
        self.db.snapshot(data.draw(st.sampled_from(sorted(self.colls))))

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        self.db.close(snapshot=clean)  # without the closing snapshot: as after a kill
        self.db = Database(DatabaseConfig(data_dir=self.dir), background=False)

    # -- the check -------------------------------------------------------------------------
    @invariant()
    def everyone_reads_exactly_the_model(self) -> None:
        db = self.db
        assert sorted(db.list_tenants()) == sorted(self.tenants)
        assert sorted(db.list_collections()) == sorted(self.colls)
        for c in self.colls:
            acc = self.access[c]
            assert db.count(c) == len(acc)
            assert db.describe_collection(c).quarantined == 0
            for t in self.tenants:
                allowed = sorted((o, i) for (o, i), rs in acc.items() if t in rs)
                assert db.count(c, tenant=t) == len(allowed)
                if allowed:
                    q = np.stack([vec(o, i) for o, i in allowed[:3]])
                    res = db.search(c, q, len(allowed), tenant=t, params=EXACT)
                    for row in range(len(q)):
                        got = sorted(
                            (res.owners[row][j], int(res.ids[row, j]))
                            for j in range(len(allowed))
                            if res.found[row, j]
                        )
                        assert got == allowed
                for o in self.tenants:
                    mine = sorted(i for (ow, i), rs in acc.items() if ow == o and t in rs)
                    got = db.get(c, list(range(31)), tenant=t, owner=o)
                    assert sorted(got.ids.tolist()) == mine
                    assert got.documents == [f"{o}{i}" for i in got.ids.tolist()]
        for t in self.tenants:
            assert db.cache_stats(tenant=t).entries == len(self.cache.get(t, ()))
            for p in sorted(self.cache.get(t, ())):
                hit = db.cache_lookup(p, vec("cache", int(p.split()[1])), tenant=t, model="m")
                assert hit.hit and hit.response == f"{t}:{p.split()[1]}".encode()


TestDatabaseMachine = DatabaseMachine.TestCase
TestDatabaseMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
