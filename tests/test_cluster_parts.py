"""The move's parts: bundle stores (a directory; S3 through moto's in-process mock) and the
in-memory control plane's compare-and-swap."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curator.cluster.bundle_store import DirectoryStore, S3Store
from curator.cluster.contracts import MoveRecord, Placement
from curator.cluster.memory_control import MemoryControlPlane
from curator.errors import InvalidArgument, NotFound


@pytest.fixture
def s3() -> Iterator[S3Store]:
    boto3 = pytest.importorskip("boto3", reason="boto3 is the `cluster` extra")
    moto = pytest.importorskip("moto", reason="moto (S3 mock) is not in the test extra")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        os.environ.setdefault(k, v)
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bundles")
        yield S3Store(client, "bundles", prefix="pre/fix")


@pytest.fixture(params=["dir", "s3"])
def store(request: Any, tmp_path: Path) -> Any:
    if request.param == "dir":
        return DirectoryStore(tmp_path / "bundles")
    return request.getfixturevalue("s3")


def test_put_get_list_delete(store: Any) -> None:
    store.put("moves/1/e1/base", b"x" * 1000)
    store.put("moves/1/e1/delta-5", b"y")
    store.put("moves/2/e1/base", b"z")
    store.put("moves/1/e1/base", b"new")  # replaces, atomically
    assert store.get("moves/1/e1/base") == b"new"
    assert store.size("moves/1/e1/base") == 3 and store.size("moves/1/e1/delta-5") == 1
    assert list(store.keys("moves/1/")) == ["moves/1/e1/base", "moves/1/e1/delta-5"]
    store.delete("moves/1/e1/base")
    store.delete("moves/1/e1/base")  # idempotent
    with pytest.raises(NotFound):
        store.get("moves/1/e1/base")
    with pytest.raises(NotFound):
        store.size("moves/1/e1/base")
    assert list(store.keys()) == ["moves/1/e1/delta-5", "moves/2/e1/base"]


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/./b", "", "a b", "é", 7])
def test_keys_cannot_escape(store: Any, key: Any) -> None:
    with pytest.raises(InvalidArgument, match="bundle key"):
        store.put(key, b"x")


def test_directory_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.put("k", b"1" * 10_000)
    assert [p.name for p in tmp_path.iterdir()] == ["k"]
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"


def test_placement_cas_needs_the_current_revision() -> None:
    cp = MemoryControlPlane()
    p = cp.cas_placement(None, Placement("a", 1, "n1", 1))
    assert p is not None and p.revision > 0
    assert cp.cas_placement(None, Placement("a", 1, "n2", 1)) is None  # exists already
    moving = cp.cas_placement(p, Placement("a", 1, "n1", 1, "moving"))
    assert moving is not None and moving.revision > p.revision
    assert cp.cas_placement(p, Placement("a", 1, "n3", 9)) is None  # stale revision
    assert cp.placement("a") == moving


def test_move_record_cas_and_delete() -> None:
    cp = MemoryControlPlane()
    rec = cp.cas_move(None, MoveRecord("a", "n1", "n2", "prepare"))
    assert rec is not None
    assert cp.cas_move(None, MoveRecord("a", "n1", "n3", "prepare")) is None
    gone = cp.cas_move(rec, None)
    assert gone is not None and gone.phase == "deleted" and cp.move("a") is None


def test_concurrent_cas_has_one_winner() -> None:
    cp = MemoryControlPlane()
    p = cp.cas_placement(None, Placement("a", 1, "n1", 1))
    wins: list[Placement] = []
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        got = cp.cas_placement(p, Placement("a", 1, f"n{i}", 2))
        if got is not None:
            wins.append(got)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and cp.placement("a") == wins[0]


def test_node_bundle_store_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.__main__ import _bundle_store, _parse

    node = ["--cluster", "--node-id", "n1", "--etcd", "127.0.0.1:2379"]
    *_, a = _parse([*node, "--bundle-dir", str(tmp_path / "b")])
    assert isinstance(_bundle_store(a), DirectoryStore)
    assert _bundle_store(_parse(node)[3]) is None  # moves are refused with a clear error
    for bad in (
        ["--bundle-dir", "x", "--bundle-s3", "s3://bkt"],
        ["--bundle-s3", "http://bkt/x"],
        ["--bundle-s3", "s3://bkt/../x"],
    ):
        with pytest.raises(SystemExit):
            _parse([*node, *bad])
    boto3 = pytest.importorskip("boto3", reason="boto3 is the `cluster` extra")
    moto = pytest.importorskip("moto", reason="moto (S3 mock) is not in the test extra")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt")
        store = _bundle_store(_parse([*node, "--bundle-s3", "s3://bkt/curator/b"])[3])
        assert isinstance(store, S3Store)
        store.put("moves/1/e1/base", b"bundle")
        assert store.get("moves/1/e1/base") == b"bundle"
        assert list(store.keys()) == ["moves/1/e1/base"]


def test_the_server_imports_without_the_cluster_extra() -> None:
    """A base install (no aetcd) must start a single server; cluster mode then refuses with
    the extra to install (the wheel smoke test caught a top-level import of aetcd)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['aetcd'] = None\n"
        "import server.app, server.__main__\n"
        "from curator.cluster.etcd_control import EtcdControl\n"
        "from curator.errors import FailedPrecondition\n"
        "try:\n"
        "    EtcdControl('127.0.0.1:1').start(wait=1)\n"
        "except FailedPrecondition as e:\n"
        "    assert 'cluster extra' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('started without aetcd')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
