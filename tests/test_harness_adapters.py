"""The harness adapters driven the way each harness drives an algorithm (no harness needed):
ann-benchmarks from an HDF5 file, big-ann-benchmarks' filter track with CSR label matrices;
their query-argument forms; and their images checked statically against each harness's
layout and install command (no container engine needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from bench.harness.annb_curator.module import CuratorANN
from bench.harness.bigann_curator.curator import CuratorFilter, label_groups
from bench.harness.datasets import exact_neighbors, write_annb_hdf5
from bench.harness.engine import Engine, query_params
from curator.config import SearchParams
from curator.errors import InvalidArgument

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
    names = set()
    try:
        # the harness stores after - before as index_size: the index's own bytes, between
        # the raw vectors and twice them (not the RSS growth, which counts the LMDB pages)
        size_kb = algo.get_memory_usage() - before
        assert before == 0 and X.nbytes / 1024 <= size_kb <= 2 * X.nbytes / 1024
        extra = algo.get_additional()
        assert extra["index_bytes"] == algo._engine.index_bytes()["total"]
        assert -(-extra["index_bytes"] // 1024) == size_kb and "rss_delta_kb" in extra
        with h5py.File(tmp_path / "result.hdf5", "w") as f:  # as the harness stores them
            for key, value in extra.items():
                f.attrs[key] = value
        for ef, form in ((16, (16,)), (256, ([256],))):  # query_args [[16]] and a wrapped group
            algo.set_query_arguments(*form)
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


def _track_recall(res: np.ndarray, gt: np.ndarray, k: int) -> float:
    """The filter track's recall@k as its evaluation computes it: |GT ∩ result| / k over
    id sets, with GT rows -1-padded like results (ties left out: none here)."""
    return float(
        np.mean(
            [
                len(set(r[:k].tolist()) & set(g[:k].tolist())) / k
                for r, g in zip(res, gt, strict=True)
            ]
        )
    )


@pytest.mark.timeout(180)
def test_big_ann_filter_sequence() -> None:
    rng = np.random.default_rng(3)
    n, n_labels, k = 6_000, 30, 10
    x = _clusters(n, 16, 2)
    pop = 1.0 / np.arange(1, n_labels + 1)
    labels = [
        sorted(
            set(rng.choice(n_labels - 1, rng.integers(1, 4), p=pop[:-1] / pop[:-1].sum()).tolist())
        )
        for _ in range(n)
    ]
    labels[5] = []  # a vector no query may return
    for i in (7, 8, 9):
        labels[i] = [*labels[i], n_labels - 1]  # a label only three vectors carry
    ds = _FilterDataset(x, labels, n_labels)
    q = _clusters(200, 16, 4)
    qlabels = [
        [int(rng.integers(0, n_labels - 1))]
        if i % 2
        else rng.choice(4, 2, replace=False).tolist()[:: 1 if i % 4 else -1]  # unsorted too
        for i in range(len(q))
    ]
    qlabels[1] = [n_labels - 1]
    qmeta = _FilterDataset(q, qlabels, n_labels).meta
    members = [
        set(np.flatnonzero([set(ql) <= set(ls) for ls in labels]).tolist()) for ql in qlabels
    ]
    gt = np.full((len(q), k), -1, np.int64)
    for i, m in enumerate(members):
        ids = np.array(sorted(m))
        got, _ = exact_neighbors(x[ids], q[i : i + 1], "euclidean", k=min(k, len(ids)))
        gt[i, : got.shape[1]] = ids[got[0]]

    algo = CuratorFilter("euclidean", {"train_min_vectors": 2000}, threads=3)
    assert algo.get_memory_usage() == 0
    algo.fit(ds)
    try:
        assert 0 < algo.get_memory_usage() <= 3 * x.nbytes / 1024
        algo.set_query_arguments({"search_ef": 128})  # the track's form: one dict
        algo.filtered_query(q, qmeta, k)
        res = algo.get_results()
        assert res.shape == (len(q), k) and res.dtype == np.int32
        for r, m in zip(res, members, strict=True):  # every result carries every query label
            assert set(r[r >= 0].tolist()) <= m
        assert sorted(res[1][res[1] >= 0].tolist()) == [7, 8, 9]  # 3 matches, then -1 padding
        # the track counts the shared -1 once: this query scores (3 + 1) / 10, not 3 / 3
        assert _track_recall(res[1:2], gt[1:2], k) == pytest.approx(0.4)
        assert _track_recall(res, gt, k) >= 0.95
        extra = algo.get_additional()
        assert extra["label_groups"] == len({tuple(sorted(ql)) for ql in qlabels})
        assert extra["threads"] == 3 and extra["index_bytes"] > x.nbytes
        algo.set_query_arguments([{"search_ef": 128}])  # list-wrapped: the same answers
        algo.filtered_query(q, qmeta, k)
        assert np.array_equal(algo.get_results(), res)
    finally:
        algo.done()
    control = _IgnoringFilter("euclidean", {"train_min_vectors": 2000})
    control.n_tenants = n_labels + 1
    control.fit(ds)
    try:
        control.set_query_arguments({"search_ef": 128})
        control.filtered_query(q, qmeta, k)
        assert _track_recall(control.get_results(), gt, k) < 0.5 * _track_recall(res, gt, k)
    finally:
        control.done()


def test_label_groups_from_a_csr_filter() -> None:
    # rows: {3}, {1, 2} (stored unsorted), {2, 1}, {3}, {4, 4} (a duplicate = one label)
    indptr = np.array([0, 1, 3, 5, 6, 8])
    labels = np.array([3, 2, 1, 1, 2, 3, 4, 4])
    groups = {key: rows.tolist() for key, rows in label_groups(indptr, labels)}
    assert groups == {(1, 2): [1, 2], (3,): [0, 3], (4,): [4]}
    assert label_groups(np.array([0]), np.array([], np.int32)) == []
    for bad in ([0, 0, 1], [0, 3]):  # a row with no label; with three
        with pytest.raises(ValueError, match="expected 1 or 2 labels per query"):
            label_groups(np.array(bad), np.array([1, 2, 3]))


def test_label_groups_are_searched_concurrently() -> None:
    """Groups run on the thread pool at once (two of them meet at a barrier, which times out
    if they ran one after the other) and the answer matches a one-thread run."""
    engine = Engine("euclidean")
    met = threading.Barrier(2, timeout=10)
    seen: list[tuple[str, ...]] = []

    def search(
        q: np.ndarray, k: int, tenants: list[str], params: object, require_all: bool
    ) -> np.ndarray:
        seen.append(tuple(tenants))
        if len(seen) <= 2:
            met.wait()
        return np.tile(np.array([int(t) for t in tenants] * k)[:k], (len(q), 1)) + 10 * require_all

    engine.search = search  # type: ignore[method-assign]
    q = np.zeros((7, 4), np.float32)
    groups = [
        (["1"], np.array([0, 2])),
        (["2", "3"], np.array([1, 3, 4])),
        (["4"], np.array([5, 6])),
    ]
    out = engine.search_groups(q, 2, groups, SearchParams(), threads=2)
    assert out[:, 0].tolist() == [1, 12, 1, 12, 12, 4, 4]
    seen.clear()
    met = threading.Barrier(1)
    assert np.array_equal(engine.search_groups(q, 2, groups, SearchParams(), threads=1), out)


def test_query_arguments_in_every_form_the_harnesses_pass() -> None:
    want = SearchParams(search_ef=64)
    for args, kwargs in [
        ((64,), {}),  # ann-benchmarks: query_args [[64]] -> set_query_arguments(64)
        (({"search_ef": 64},), {}),  # the filter track's query-args entry (one dict)
        (([64],), {}),  # a whole group passed as one argument
        (([{"search_ef": 64}],), {}),
        ((), {"search_ef": 64}),
    ]:
        assert query_params(*args, **kwargs) == want
    assert query_params(64, 4) == SearchParams(search_ef=64, beam_size=4)  # field order
    assert query_params() == SearchParams()
    for args, kwargs, msg in [
        (("search_ef",), {}, "a dict unpacked with"),  # set_query_arguments(*{"search_ef": 64})
        (({"ef": 64},), {}, r"among \['search_ef'"),
        ((1, 2, 0.0, 4, 5), {}, "at most 4"),
        ((64,), {"search_ef": 32}, "once"),
        ((True,), {}, "search_ef an integer"),
        ((0,), {}, "search_ef an integer"),
    ]:
        with pytest.raises(InvalidArgument, match=msg):
            query_params(*args, **kwargs)
    algo = CuratorANN("euclidean")
    algo.set_query_arguments({"search_ef": 32, "beam_size": 2})
    assert str(algo) == "Curator(inprocess, search_ef=32, beam_size=2)"


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


# -- the images, checked statically against each harness's layout -----------------------------

ROOT = Path(__file__).resolve().parents[1]
# what each harness's checkout holds at its root that its images use, and its .dockerignore
_HARNESS_FILES = {
    "annb": ["run_algorithm.py", "requirements.txt", "install.py", "ann_benchmarks/__init__.py"],
    "bigann": ["run_algorithm.py", "requirements_py3.12.txt", "install.py", "neurips23/common.py"],
}
_DOCKERIGNORE = {"annb": ["data", "results"], "bigann": ["data", "results", "*.bvecs", "venv"]}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments out."""
    text = "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _fake_harness(tmp_path: Path, which: str) -> Path:
    from bench.harness.stage import HARNESSES

    root = tmp_path / which
    for rel in _HARNESS_FILES[which]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / HARNESSES[which].place).mkdir(parents=True, exist_ok=True)
    (root / ".dockerignore").write_text("\n".join(_DOCKERIGNORE[which]) + "\n")
    return root


@pytest.mark.parametrize("which", ["annb", "bigann"])
def test_image_builds_from_the_harness_root_as_its_installer_runs_it(
    tmp_path: Path, which: str
) -> None:
    """The Dockerfile, once `bench.harness.stage` has put the folder in a checkout of the
    harness: base Python >= requires-python, every COPY source inside the build context (the
    harness root, as its install.py builds) and not docker-ignored, the harness's
    requirements, Curator and bench installed, the harness's entry point; config and README
    agree with the installer's tag and command."""
    import fnmatch
    import re
    import tomllib

    from bench.harness.stage import HARNESSES, stage

    yaml = pytest.importorskip("yaml")
    h = HARNESSES[which]
    root = _fake_harness(tmp_path, which)
    folder = stage(which, root)
    assert folder == root / h.place / h.folder
    steps = _instructions(folder / "Dockerfile")

    # base image: a Python that satisfies requires-python (the harness bases ship 3.10)
    need = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = tuple(int(v) for v in re.fullmatch(r">=\s*(\d+)\.(\d+)", need).groups())
    base = [a for i, a in steps if i == "FROM"]
    assert len(base) == 1, base
    m = re.fullmatch(r"(?:docker\.io/library/)?python:(\d+)\.(\d+)[\w.-]*", base[0])
    assert m is not None and (int(m[1]), int(m[2])) >= floor, base[0]

    # every COPY/ADD source exists in the context and is not docker-ignored
    copied: dict[str, str] = {}
    workdir = "/"
    for instr, args in steps:
        if instr == "WORKDIR":
            workdir = args
        if instr in ("COPY", "ADD"):
            assert not args.startswith("--from"), args
            *sources, dest = args.split()
            for src in sources:
                assert not src.startswith(("/", "..")) and (root / src).exists(), src
                top = src.split("/")[0]
                assert not any(fnmatch.fnmatch(top, pat) for pat in _DOCKERIGNORE[which]), src
                target = dest if not dest.endswith("/") else dest + Path(src).name
                copied[src] = target if target.startswith("/") else f"{workdir}/{target}"
    assert workdir == "/home/app"  # where the harness mounts its code, data and results
    runs = " && ".join(a for i, a in steps if i == "RUN")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    if any(d.startswith("hnswlib") for d in deps):  # source only on PyPI: built with g++
        assert runs.index("apt-get install -y --no-install-recommends g++") < runs.index(
            "pip install --no-cache-dir /opt"
        )
    requirements = next(s for s in copied if s.startswith("requirements"))
    assert f"pip install --no-cache-dir -r {requirements}" in runs
    src_dir = f"{h.place}/{h.folder}/curator-src"
    assert f"pip install --no-cache-dir {copied[src_dir]}" in runs
    assert (folder / "curator-src" / "pyproject.toml").is_file()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:  # every package is in the copy
        assert (folder / "curator-src" / pattern.rstrip("*") / "__init__.py").is_file()
    env = dict(a.split("=", 1) for i, a in steps if i == "ENV")
    bench_path = env["PYTHONPATH"]
    rel = Path(bench_path).relative_to(copied[src_dir])
    assert (folder / "curator-src" / rel / "bench" / "harness" / "engine.py").is_file()
    assert "import curator, client, server, bench.harness.engine" in runs
    entry = [a for i, a in steps if i == "ENTRYPOINT"]
    assert entry and entry[-1].endswith('"-u", "run_algorithm.py"]'), entry

    # the config names what the installer builds, and a module that resolves in the tree
    text = (folder / ("config.yml" if which == "annb" else "config.yaml")).read_text()
    algos = (
        [a for point in yaml.safe_load(text).values() for ms in point.values() for a in ms]
        if which == "annb"
        else [a for ds in yaml.safe_load(text).values() for a in ds.values()]
    )
    assert algos
    for algo in algos:
        assert algo.get("docker_tag", algo.get("docker-tag")) == h.docker_tag
        assert h.docker_tag.endswith(f"-{folder.name}")  # the installer's tag = folder name
        module = algo["module"] + (".module" if which == "annb" else "")  # annb appends it
        path = root / (module.replace(".", "/") + ".py")
        assert path.is_file(), module
        assert f"class {algo['constructor']}(" in path.read_text()
        assert algo.get("base_args", algo.get("base-args")) == ["@metric"]

    # the README documents the steps the installer takes, and the Dockerfile header too
    readme = (folder / "README.md").read_text()
    for doc in (readme, (folder / "Dockerfile").read_text()):
        assert h.install in doc and h.build in doc
    assert f"python -m bench.harness.stage {which}" in readme
    with pytest.raises(FileExistsError):  # staging twice needs --replace
        stage(which, root)
    with pytest.raises(FileNotFoundError, match="expected a"):
        stage(which, tmp_path / "not-a-checkout")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["annb", "bigann"])
def test_staged_adapter_imports_by_its_config_module_path(tmp_path: Path, which: str) -> None:
    """In the image's layout (cwd = the harness root, PYTHONPATH = the staged bench path),
    the config's module imports from the staged copy and builds the adapter."""
    import os
    import subprocess
    import sys

    from bench.harness.stage import HARNESSES, stage

    h = HARNESSES[which]
    root = _fake_harness(tmp_path, which)
    folder = stage(which, root)
    module = (
        f"ann_benchmarks.algorithms.{h.folder}.module"
        if which == "annb"
        else f"neurips23.filter.{h.folder}.curator"
    )
    cls = "CuratorANN" if which == "annb" else "CuratorFilter"
    code = (
        f"import importlib, bench.harness.engine as e; m = importlib.import_module('{module}'); "
        f"a = m.{cls}('euclidean'); a.set_query_arguments([{{'search_ef': 8}}]); "
        "print(m.__file__); print(e.__file__); print(a)"
    )
    env = {**os.environ, "PYTHONPATH": str(folder / "curator-src" / "bench-path")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    mod_file, engine_file, name = done.stdout.splitlines()[:3]
    assert Path(mod_file).is_relative_to(folder) and Path(engine_file).is_relative_to(folder)
    assert "search_ef=8" in name
