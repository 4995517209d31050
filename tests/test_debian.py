"""End-to-end on the real Debian data (skipped where ../shared/data/debian is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from curator import CuratorIndex

DATA = Path(
    os.environ.get(
        "CURATOR_DEMO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "debian"
    )
)
pytestmark = pytest.mark.skipif(
    not (DATA / "base.npy").exists(), reason=f"no Debian dataset at {DATA}"
)


@pytest.mark.timeout(120)
def test_recall_on_debian_tenants() -> None:
    base = np.load(DATA / "base.npy").astype(np.float32)
    tenant = np.load(DATA / "base_tenant.npy")
    queries, qt, gt = (np.load(DATA / f) for f in ("queries.npy", "query_tenant.npy", "gt_ids.npy"))
    idx = CuratorIndex(base.shape[1], "cosine")
    order = np.argsort(tenant, kind="stable")
    with idx.deferred_training():
        for rows in np.split(order, np.flatnonzero(np.diff(tenant[order])) + 1):
            idx.insert(rows, base[rows], owner=f"t{tenant[rows[0]]}")
    assert idx.is_trained and len(idx) == len(base)
    hits = 0.0
    n = 300
    for i in range(n):
        ids, _ = idx.search(f"t{qt[i]}", queries[i : i + 1], 10)
        truth = gt[i, :10][gt[i, :10] >= 0]
        assert np.isin(ids[0][ids[0] >= 0], np.flatnonzero(tenant == qt[i])).all()
        hits += len(set(truth.tolist()) & set(ids[0].tolist())) / len(truth)
    assert hits / n >= 0.95
