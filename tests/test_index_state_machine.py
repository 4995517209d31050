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
        # ids are scoped per owner: the model keys vectors by (owner, id)
        self.access: dict[tuple[str, int], set[str]] = {}
        self.tenants: set[str] = set()

    @rule(ids=st.lists(IDS, min_size=1, max_size=12, unique=True), owner=st.sampled_from(TENANTS))
    def insert(self, ids: list[int], owner: str) -> None:
        self.idx.insert(ids, np.vstack([vec(i) for i in ids]), owner=owner)
        for i in ids:
            self.access[(owner, i)] = {owner}
        self.tenants.add(owner)

    @rule(
        ids=st.lists(IDS, min_size=1, max_size=12),
        tenant=st.sampled_from(TENANTS),
        owner=st.sampled_from(TENANTS),
    )
    def grant(self, ids: list[int], tenant: str, owner: str) -> None:
        if any((owner, i) not in self.access for i in ids):
            with pytest.raises(NotFound):
                self.idx.grant(ids, tenant, owner=owner)
            return
        self.idx.grant(ids, tenant, owner=owner)
        self.tenants.add(tenant)
        for i in ids:
            self.access[(owner, i)].add(tenant)

    @rule(
        ids=st.lists(IDS, min_size=1, max_size=12),
        tenant=st.sampled_from(TENANTS),
        owner=st.sampled_from(TENANTS),
    )
    def revoke(self, ids: list[int], tenant: str, owner: str) -> None:
        if tenant not in self.tenants or any((owner, i) not in self.access for i in ids):
            with pytest.raises(NotFound):
                self.idx.revoke(ids, tenant, owner=owner)
        elif owner == tenant:
            with pytest.raises(FailedPrecondition):
                self.idx.revoke(ids, tenant, owner=owner)
        else:
            self.idx.revoke(ids, tenant, owner=owner)
            for i in ids:
                self.access[(owner, i)].discard(tenant)

    @rule(ids=st.lists(IDS, min_size=1, max_size=12), owner=st.sampled_from(TENANTS))
    def delete(self, ids: list[int], owner: str) -> None:
        expected = len({i for i in ids if (owner, i) in self.access})
        assert self.idx.delete(ids, owner=owner) == expected
        for i in ids:
            self.access.pop((owner, i), None)

    @precondition(lambda self: bool(self.tenants))
    @rule(data=st.data())
    def drop_tenant(self, data: st.DataObject) -> None:
        tenant = data.draw(st.sampled_from(sorted(self.tenants)))
        self.idx.drop_tenant(tenant)
        self.tenants.discard(tenant)
        for key in [key for key in self.access if key[0] == tenant]:
            del self.access[key]
        for readers in self.access.values():
            readers.discard(tenant)

    @rule()
    def train(self) -> None:
        self.idx.train()

    @invariant()
    def each_tenant_reads_exactly_its_vectors(self) -> None:
        self.idx.check_invariants()
        assert sorted(self.idx.tenants()) == sorted(self.tenants)
        assert len(self.idx) == len(self.access)
        q = np.zeros((1, 4), np.float32)
        for t in self.tenants:
            allowed = sorted(i for (_, i), readers in self.access.items() if t in readers)
            assert self.idx.readable_ids(t).tolist() == allowed
            k = max(1, min(len(allowed), 4096))
            got = self.idx.search(t, q, k, EXACT)[0][0]
            assert sorted(got[got >= 0].tolist()) == allowed


TestIsolation = IsolationMachine.TestCase
TestIsolation.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
