"""The harness adapters driven the way each harness drives an algorithm (no harness needed):
ann-benchmarks from an HDF5 file, big-ann-benchmarks' filter track with CSR label matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.harness.annb_curator.module import CuratorANN
from bench.harness.bigann_curator.curator import CuratorFilter
from bench.harness.datasets import exact_neighbors, write_annb_hdf5

h5py = pytest.importorskip("h5py")
sparse = pytest.importorskip("scipy.sparse")


def _clusters(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, d)) * 4
    return (centers[rng.integers(0, 40, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("metric", "mode"), [("euclidean", "inprocess"), ("angular", "grpc")])
def test_ann_benchmarks_sequence(tmp_path: Path, metric: str, mode: str) -> None:
    train, test = _clusters(12_000, 24, 0), _clusters(100, 24, 1)
    write_annb_hdf5(tmp_path / "toy.hdf5", train, test, metric)
    with h5py.File(tmp_path / "toy.hdf5", "r") as f:
        X, Q = np.array(f["train"]), np.array(f["test"])
        true_dist = np.array(f["distances"])
        assert f.attrs["distance"] == metric
    k = 10
    algo = CuratorANN(metric, {"train_min_vectors": 2000}, mode=mode)
    before = algo.get_memory_usage()
    algo.fit(X)
    assert isinstance(before, int) and algo.get_memory_usage() >= before
    names = set()
    try:
        for ef in (16, 256):
            algo.set_query_arguments(ef)
            names.add(str(algo))
            found = [algo.query(q, k) for q in Q]
            for ids in found:
                assert len(ids) == len(set(ids)) <= k and all(0 <= i < len(X) for i in ids)
            algo.batch_query(Q, k)
            assert algo.get_batch_results() == found
            rec = np.mean(
                [
                    (
                        exact_neighbors(X[np.array(ids)], q[None], metric, k=len(ids))[1][0]
                        <= true_dist[i, k - 1] + 1e-3
                    ).sum()
                    / k
                    for i, (q, ids) in enumerate(zip(Q, found, strict=True))
                ]
            )
            if ef == 256:
                assert rec >= 0.95, rec
        assert len(names) == 2  # the plot label follows the query arguments
    finally:
        algo.done()


class _FilterDataset:
    """What big-ann's filter runner hands an algorithm: vectors and a CSR label matrix."""

    def __init__(self, x: np.ndarray, labels: list[list[int]], n_labels: int) -> None:
        self.x = x
        rows = np.repeat(np.arange(len(labels)), [len(ls) for ls in labels])
        cols = np.concatenate([np.array(ls, int) for ls in labels])
        self.meta = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(x), n_labels)
        )

    def get_dataset(self) -> np.ndarray:
        return self.x

    def get_dataset_metadata(self) -> object:
        return self.meta


class _IgnoringFilter(CuratorFilter):
    """Negative control: answers every query from one label-less search."""

    def filtered_query(self, X: np.ndarray, filter: object, k: int) -> None:
        q = np.ascontiguousarray(X, np.float32)
        self.res = self._engine.search(q, k, [str(t) for t in range(self.n_tenants)], self._params)


@pytest.mark.timeout(180)
def test_big_ann_filter_sequence() -> None:
    rng = np.random.default_rng(3)
    n, n_labels, k = 15_000, 30, 10
    x = _clusters(n, 16, 2)
    pop = 1.0 / np.arange(1, n_labels + 1)
    labels = [
        sorted(set(rng.choice(n_labels, rng.integers(1, 4), p=pop / pop.sum()).tolist()))
        for _ in range(n)
    ]
    labels[5] = []  # a vector no query may return
    ds = _FilterDataset(x, labels, n_labels)
    q = _clusters(200, 16, 4)
    qlabels = [
        [int(rng.integers(0, n_labels))]
        if i % 2
        else sorted(rng.choice(4, 2, replace=False).tolist())
        for i in range(len(q))
    ]
    qmeta = _FilterDataset(q, qlabels, n_labels).meta
    members = [
        set(np.flatnonzero([set(ql) <= set(ls) for ls in labels]).tolist()) for ql in qlabels
    ]
    truth = []
    for i, m in enumerate(members):
        ids = np.array(sorted(m))
        got, _ = exact_neighbors(x[ids], q[i : i + 1], "euclidean", k=min(k, len(ids)))
        truth.append(set(ids[got[0]].tolist()))

    def recall(res: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    len(set(r[r >= 0].tolist()) & t) / max(1, len(t))
                    for r, t in zip(res, truth, strict=True)
                ]
            )
        )

    algo = CuratorFilter("euclidean", {"train_min_vectors": 2000})
    algo.fit(ds)
    try:
        algo.set_query_arguments({"search_ef": 128})
        algo.filtered_query(q, qmeta, k)
        res = algo.get_results()
        assert res.shape == (len(q), k) and res.dtype == np.int32
        for r, m in zip(res, members, strict=True):  # every result carries every query label
            assert set(r[r >= 0].tolist()) <= m
        assert recall(res) >= 0.95
    finally:
        algo.done()
    control = _IgnoringFilter("euclidean", {"train_min_vectors": 2000})
    control.n_tenants = n_labels + 1
    control.fit(ds)
    try:
        control.set_query_arguments({"search_ef": 128})
        control.filtered_query(q, qmeta, k)
        assert recall(control.get_results()) < 0.5 * recall(res)
    finally:
        control.done()


@pytest.mark.timeout(180)
def test_adapter_against_a_running_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curator.config import DatabaseConfig
    from curator.database import Database
    from server.app import create_server
    from server.config import ServerConfig

    db = Database(DatabaseConfig(data_dir=str(tmp_path)), background=False)
    db.keys.ensure("ext-admin", None, "test")
    server = create_server(db, ServerConfig(address="127.0.0.1:0"))
    monkeypatch.setenv("CURATOR_HARNESS_ADDRESS", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("CURATOR_HARNESS_KEY", "ext-admin")
    try:
        train, test = _clusters(3000, 8, 5), _clusters(20, 8, 6)
        algo = CuratorANN("euclidean", {"train_min_vectors": 1000}, mode="grpc")
        algo.fit(train)
        algo.set_query_arguments(512)
        found = [algo.query(q, 5) for q in test]
        ids, _ = exact_neighbors(train, test, "euclidean", k=5)
        assert (
            np.mean([len(set(f) & set(t.tolist())) / 5 for f, t in zip(found, ids, strict=True)])
            >= 0.95
        )
        assert db.list_collections()  # it really wrote to the running server
        algo.done()
        assert db.list_collections() == [] and db.list_tenants() == []  # and cleaned up
    finally:
        server.stop(1)
        db.close()
