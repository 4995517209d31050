"""Tenant isolation as a state machine: after every operation each tenant reads exactly the
vectors a simple model says it may, and the sub-tree invariants hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from curator import CuratorIndex, IndexConfig, SearchParams
from curator.errors import FailedPrecondition, NotFound

TENANTS = ["a", "b", "c", "d"]
IDS = st.integers(0, 120)
EXACT = SearchParams(exact_search_threshold=0, search_ef=4096)  # the tree path, exhaustively


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((1, 4)).astype(np.float32)


class IsolationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        cfg = IndexConfig(
            branching=4,
            max_leaf_size=4,
            max_sl_size=4,
            max_depth=4,
            train_min_vectors=24,
            retrain_growth=2.0,
        )
        self.idx = CuratorIndex(4, "l2", cfg)
        self.owner: dict[int, str] = {}
        self.access: dict[int, set[str]] = {}
        self.tenants: set[str] = set()

    @rule(ids=st.lists(IDS, min_size=1, max_size=12, unique=True), owner=st.sampled_from(TENANTS))
    def insert(self, ids: list[int], owner: str) -> None:
        self.idx.insert(ids, np.vstack([vec(i) for i in ids]), owner=owner)
        for i in ids:
            self.owner[i] = owner
            self.access[i] = {owner}
        self.tenants.add(owner)

    @rule(ids=st.lists(IDS, min_size=1, max_size=12), tenant=st.sampled_from(TENANTS))
    def grant(self, ids: list[int], tenant: str) -> None:
        if any(i not in self.owner for i in ids):
            with pytest.raises(NotFound):
                self.idx.grant(ids, tenant)
            return
        self.idx.grant(ids, tenant)
        self.tenants.add(tenant)
        for i in ids:
            self.access[i].add(tenant)

    @rule(ids=st.lists(IDS, min_size=1, max_size=12), tenant=st.sampled_from(TENANTS))
    def revoke(self, ids: list[int], tenant: str) -> None:
        if tenant not in self.tenants or any(i not in self.owner for i in ids):
            with pytest.raises(NotFound):
                self.idx.revoke(ids, tenant)
        elif any(self.owner[i] == tenant for i in ids):
            with pytest.raises(FailedPrecondition):
                self.idx.revoke(ids, tenant)
        else:
            self.idx.revoke(ids, tenant)
            for i in ids:
                self.access[i].discard(tenant)

    @rule(ids=st.lists(IDS, min_size=1, max_size=12))
    def delete(self, ids: list[int]) -> None:
        expected = len({i for i in ids if i in self.owner})
        assert self.idx.delete(ids) == expected
        for i in ids:
            self.owner.pop(i, None)
            self.access.pop(i, None)

    @precondition(lambda self: bool(self.tenants))
    @rule(data=st.data())
    def drop_tenant(self, data: st.DataObject) -> None:
        tenant = data.draw(st.sampled_from(sorted(self.tenants)))
        self.idx.drop_tenant(tenant)
        self.tenants.discard(tenant)
        for i in [i for i, o in self.owner.items() if o == tenant]:
            del self.owner[i], self.access[i]
        for readers in self.access.values():
            readers.discard(tenant)

    @rule()
    def train(self) -> None:
        self.idx.train()

    @invariant()
    def each_tenant_reads_exactly_its_vectors(self) -> None:
        self.idx.check_invariants()
        assert sorted(self.idx.tenants()) == sorted(self.tenants)
        assert len(self.idx) == len(self.owner)
        q = np.zeros((1, 4), np.float32)
        for t in self.tenants:
            allowed = sorted(i for i, readers in self.access.items() if t in readers)
            assert self.idx.readable_ids(t).tolist() == allowed
            k = max(1, min(len(allowed), 4096))
            got = self.idx.search(t, q, k, EXACT)[0][0]
            assert sorted(got[got >= 0].tolist()) == allowed


TestIsolation = IsolationMachine.TestCase
TestIsolation.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
