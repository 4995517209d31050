"""The gRPC service through the SDK: congruence with the in-process Database, isolation, bad
input, concurrency, health, reflection. Servers bind 127.0.0.1 on an ephemeral port."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client
from curator import errors
from curator.config import DatabaseConfig, IndexConfig, SearchParams
from curator.database import Database
from server.app import create_server
from server.config import ServerConfig

ADMIN = "test-admin-key-" + "Hq7xW2mZ" * 3  # strong: a server process refuses weak keys
DIM = 8


class Served:
    def __init__(self, tmp: Path, **server_kw: Any) -> None:
        self.db = Database(DatabaseConfig(data_dir=str(tmp), max_batch=2000), background=False)
        self.db.keys.ensure(ADMIN, None, "test")
        self.server = create_server(self.db, ServerConfig(address="127.0.0.1:0", **server_kw))
        self.address = f"127.0.0.1:{self.server.port}"

    def client(self, key: str = ADMIN, **kw: Any) -> Client:
        return Client(self.address, key, timeout=20, **kw)

    def close(self) -> None:
        self.server.stop(1)
        self.db.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _scenario(api: Any, create_collection: Any) -> list[Any]:
    """The same calls in-process and over the wire; returns everything observable."""
    out: list[Any] = []
    api.create_tenant("a")
    api.create_tenant("b")
    create_collection("docs")
    x = _vecs(600)
    out.append(api.upsert("docs", np.arange(600), x, [f"d{i}" for i in range(600)], tenant="a"))
    out.append(api.upsert("docs", np.arange(600, 700), _vecs(100, 1), tenant="b"))
    api.allow_sharing("a", "b")
    out.append(api.grant("docs", np.arange(0, 50), "b", tenant="a"))
    out.append(api.revoke("docs", np.arange(0, 10), "b", tenant="a"))
    out.append(api.delete("docs", np.arange(590, 620), tenant="a"))
    out.append(api.count("docs"))
    out.append(api.count("docs", tenant="b"))
    for tenant in ("a", "b", ["a", "b"]):
        res = api.search(
            "docs", x[:20], 7, tenant=tenant, with_documents=True, params=SearchParams(search_ef=32)
        )
        out.append((res.ids, res.distances, res.documents, res.seq, res.owners))
    both = api.search("docs", x[:20], 7, tenant=["a", "b"], require_all=True)
    out.append((both.ids, both.distances))
    assert set(both.ids[both.found].tolist()) <= set(range(10, 50))  # a's ids granted to b
    rec = api.get("docs", [5, 20, 650, 9999], tenant="b")
    out.append((rec.ids, rec.vectors, rec.owners, rec.documents))
    for call in (
        lambda: api.search("docs", _vecs(2)[:, :4], 3, tenant="a"),
        lambda: api.search("docs", x[:2], 0, tenant="a"),
        lambda: api.search("nope", x[:2], 3, tenant="a"),
        lambda: api.upsert("docs", [1, 1], _vecs(2), tenant="a"),
        lambda: api.grant("docs", [650], "a", tenant="b"),
        lambda: api.grant("docs", [5], "a", tenant="b"),
        lambda: api.create_tenant("a"),
    ):
        try:
            call()
            out.append("no error")
        except errors.CuratorError as e:
            out.append(type(e).__name__)
    return out


def test_same_results_in_process_and_over_the_wire(tmp_path: Path) -> None:
    idx = IndexConfig(train_min_vectors=200, max_sl_size=16)
    local = Database(DatabaseConfig(data_dir=str(tmp_path / "local")), background=False)
    try:
        expected = _scenario(local, lambda n: local.create_collection(n, DIM, "cosine", idx))
    finally:
        local.close()
    s = Served(tmp_path / "remote")
    try:
        with s.client() as c:
            got = _scenario(
                c,
                lambda n: c.create_collection(n, DIM, "cosine", idx),
            )
    finally:
        s.close()
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, tuple):
            for gi, ei in zip(g, e, strict=True):
                if isinstance(ei, np.ndarray):
                    np.testing.assert_array_equal(gi, ei)
                else:
                    assert gi == ei
        else:
            assert g == e


def test_isolation(served: Served) -> None:
    with served.client() as admin:
        for t in ("a", "b"):
            admin.create_tenant(t)
        admin.create_collection("docs", DIM)
        _, key_a = admin.issue_key("a")
        key_b_id, key_b = admin.issue_key("b")
    x = _vecs(20)
    with served.client(key_a) as a, served.client(key_b) as b:
        a.upsert("docs", np.arange(10), x[:10])
        b.upsert("docs", np.arange(10, 20), x[10:])
        # A sees only its own vectors, whatever it asks for
        hits = a.search("docs", x, 20)
        assert set(hits.ids[hits.found].tolist()) == set(range(10))
        assert a.get("docs", np.arange(20)).ids.tolist() == list(range(10))
        assert a.count("docs") == 10
        with pytest.raises(errors.PermissionDenied):
            a.search("docs", x, 5, tenant="b")
        with pytest.raises(errors.PermissionDenied):
            a.search("docs", x, 5, tenant=["a", "b"])
        with pytest.raises(errors.PermissionDenied):
            a.upsert("docs", [100], x[:1], tenant="b")
        # ids are scoped per owner: A's id 15 is its own vector, B's id 15 is untouched, and
        # nothing tells A whether B has an id 15
        a.upsert("docs", [15], x[:1])
        assert a.delete("docs", [15, 16]).count == 1
        with pytest.raises(errors.PermissionDenied):
            a.delete("docs", [15], owner="b")
        with pytest.raises(errors.NotFound):
            a.grant("docs", [15], "a")
        with pytest.raises(errors.PermissionDenied):
            a.count("docs", tenant="b")
        for admin_call in (
            lambda: a.create_tenant("x"),
            lambda: a.drop_tenant("b"),
            lambda: a.create_collection("y", 4),
            lambda: a.issue_key("b"),
            lambda: a.list_tenants(),
            lambda: a.drop_collection("docs"),
            lambda: a.backup("x"),
        ):
            with pytest.raises(errors.PermissionDenied):
                admin_call()
        assert a.describe_collection("docs").vectors == 10  # its own count only
        assert b.count("docs") == 10 and b.get("docs", [15]).ids.tolist() == [15]
        # sharing works through the owner only, to tenants the admin allowed
        with pytest.raises(errors.NotFound, match="may share with"):
            a.grant("docs", [1, 2], "b")
        with served.client() as admin:
            admin.allow_sharing("a", "b")
        a.grant("docs", [1, 2], "b")
        assert b.get("docs", np.arange(20), owner="a").ids.tolist() == [1, 2]
        res = b.search("docs", x[1:3], 1)
        assert res.owners == [["a"], ["a"]] and res.ids[:, 0].tolist() == [1, 2]
        with pytest.raises(errors.PermissionDenied):
            b.grant("docs", [1], "b", owner="a")
        # the grantee may always drop a share it received
        assert b.revoke("docs", [1], "b", owner="a").count == 1
        assert b.get("docs", np.arange(20), owner="a").ids.tolist() == [2]
    for key in ("", "nonsense", key_a + "x"):
        with served.client(key) as c, pytest.raises(errors.Unauthenticated):
            c.count("docs")
    with served.client() as admin:
        admin.revoke_key(key_b_id)
    with served.client(key_b) as b, pytest.raises(errors.Unauthenticated):
        b.count("docs")


def test_bad_input(served: Served) -> None:
    with served.client() as c:
        c.create_tenant("a")
        c.create_collection("docs", DIM)
        x = _vecs(4)
        cases: list[tuple[type[Exception], Any]] = [
            (errors.InvalidArgument, lambda: c.upsert("docs", [1], _vecs(1)[:, :5], tenant="a")),
            (errors.InvalidArgument, lambda: c.upsert("docs", [1], x[:1] * np.nan, tenant="a")),
            (errors.InvalidArgument, lambda: c.upsert("docs", [1], x[:1])),  # admin: no tenant
            (errors.InvalidArgument, lambda: c.search("docs", x, 100_000, tenant="a")),
            (errors.InvalidArgument, lambda: c.search("docs", x, 5)),
            (errors.NotFound, lambda: c.search("nope", x, 5, tenant="a")),
            (errors.NotFound, lambda: c.search("docs", x, 5, tenant="ghost")),
            (
                errors.ResourceExhausted,
                lambda: c.upsert("docs", np.arange(3000), _vecs(3000), tenant="a", batch_size=3000),
            ),
            (errors.InvalidArgument, lambda: c.create_collection("z", 4, metric="hamming")),
            (errors.NotFound, lambda: c.issue_key("ghost")),
        ]
        for exc, call in cases:
            with pytest.raises(exc):
                call()
        assert c.count("docs") == 0
        assert c.server_info().seq == 0  # nothing was written


def test_oversized_message_is_rejected(tmp_path: Path) -> None:
    s = Served(tmp_path, max_message_bytes=1 << 20)
    try:
        with s.client() as c:
            c.create_tenant("a")
            c.create_collection("big", 256)
            x = np.zeros((2000, 256), np.float32)  # 2 MB > the server's 1 MB
            with pytest.raises(errors.ResourceExhausted):
                c.upsert("big", np.arange(2000), x, tenant="a", batch_size=2000)
            assert c.count("big") == 0
    finally:
        s.close()


def test_malformed_matrix_bytes(served: Served) -> None:
    from curator_api.v1 import curator_pb2 as pb
    from curator_api.v1 import curator_pb2_grpc as pb_grpc

    with served.client() as c:
        c.create_tenant("a")
        c.create_collection("docs", DIM)
    with grpc.insecure_channel(served.address) as ch:
        stub = pb_grpc.VectorsStub(ch)
        req = pb.UpsertRequest(
            collection="docs", tenant="a", ids=[1], vectors=pb.Matrix(dim=DIM, data=b"\0" * 30)
        )
        with pytest.raises(grpc.RpcError) as e:
            stub.Upsert(req, metadata=(("x-api-key", ADMIN),), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "multiple of 32 bytes" in e.value.details()


@pytest.mark.timeout(120)
def test_concurrent_searches_while_writing(served: Served) -> None:
    with served.client() as c:
        c.create_tenant("a")
        c.create_collection("docs", DIM)
    x = _vecs(3000, seed=5)
    stop = threading.Event()
    problems: list[Any] = []
    counts: list[int] = []

    def search_loop() -> None:
        with served.client() as c:
            while not stop.is_set():
                try:
                    n = c.count("docs", tenant="a")
                    res = c.search("docs", x[:16], 10, tenant="a")
                    counts.append(n)
                    if n >= 10 and not res.found.all():
                        problems.append(("short result", n))
                except Exception as e:
                    problems.append(e)

    threads = [threading.Thread(target=search_loop) for _ in range(4)]
    for t in threads:
        t.start()
    with served.client() as w:
        for i in range(0, 3000, 100):
            w.upsert("docs", np.arange(i, i + 100), x[i : i + 100], tenant="a")
    stop.set()
    for t in threads:
        t.join(60)
    assert not problems, problems[:3]
    assert counts and all(n % 100 == 0 for n in counts)
    with served.client() as c:
        assert c.count("docs") == 3000


def test_health_and_reflection(served: Served) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(served.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "curator.v1.Vectors", "curator.v1.Admin"):
            r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        names = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"curator.v1.Vectors", "curator.v1.Admin", "grpc.health.v1.Health"} <= names


def test_not_serving_until_loaded(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_open() -> Database:
        gate.wait(20)
        db = Database(DatabaseConfig(data_dir=str(tmp_path)), background=False)
        db.keys.ensure(ADMIN, None, "test")
        return db

    server = create_server(slow_open, ServerConfig(address="127.0.0.1:0"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            req = health_pb2.HealthCheckRequest(service="")
            assert (
                health.Check(req, timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING
            )
            with (
                Client(f"127.0.0.1:{server.port}", ADMIN, retries=1) as c,
                pytest.raises(errors.Unavailable),
            ):
                c.count("x")
            gate.set()
            assert server.wait_ready(30)
            assert health.Check(req, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        gate.set()
        server.stop(1)


def test_deadline_is_honoured(served: Served) -> None:
    """A search that takes far longer than its deadline ends with DEADLINE_EXCEEDED."""
    with served.client() as c:
        c.create_tenant("a")
        c.create_collection("docs", DIM)
        c.upsert("docs", np.arange(20_000), _vecs(20_000), tenant="a", batch_size=2000)
        slow = SearchParams(exact_search_threshold=10**9)  # exact scans of 20k vectors
        with pytest.raises(errors.DeadlineExceeded):
            c.search("docs", _vecs(2000, 1), 100, tenant="a", params=slow, timeout=0.002)


def test_server_refuses_work_past_the_deadline() -> None:
    """The servicer checks the remaining time before it starts."""
    from server.status import rpc

    class Expired:
        def time_remaining(self) -> float:
            return 0.0

        def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise RuntimeError(code, details)

    ran = []
    method = rpc(lambda self, request, context: ran.append(1))
    with pytest.raises(RuntimeError) as e:
        method(None, None, Expired())
    assert e.value.args[0] == grpc.StatusCode.DEADLINE_EXCEEDED and not ran


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a cert")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    s = Served(tmp_path / "db", tls_cert=str(cert), tls_key=str(key))
    try:
        with Client(
            f"localhost:{s.server.port}",
            ADMIN,
            tls=True,
            root_certificates=cert.read_bytes(),
            timeout=20,
        ) as c:
            assert c.server_info().principal == "admin"
        with (
            Client(f"localhost:{s.server.port}", ADMIN, retries=1, timeout=5) as plain,
            pytest.raises(errors.Unavailable),
        ):
            plain.server_info()  # plaintext to a TLS port fails
    finally:
        s.close()


def test_hardening_over_the_wire(served: Served) -> None:
    """#10 items 9 and 10 through the SDK: per-tenant seq, hidden tenant count, uint64 ids
    end to end, an empty get, bad ids and deep documents as clear errors."""
    with served.client() as admin:
        for t in ("a", "b"):
            admin.create_tenant(t)
        admin.create_collection("docs", DIM)
        _, key_a = admin.issue_key("a")
        _, key_b = admin.issue_key("b")
    x = _vecs(3)
    ids = np.array([2**64 - 2, 2**63 + 5, 3], np.uint64)
    with served.client(key_a) as a, served.client(key_b) as b:
        assert a.upsert("docs", ids, x).seq == 1
        for _ in range(3):
            b.upsert("docs", [1], x[:1])
        assert a.upsert("docs", [4], x[:1]).seq == 2  # its own count: b's writes are invisible
        info = a.server_info()
        assert info.tenants == 0 and info.seq == 2
        res = a.search("docs", x, 1)
        assert res.ids[:, 0].tolist() == ids.tolist() and res.seq == 2
        assert a.get("docs", ids[:2]).ids.tolist() == ids[:2].tolist()
        empty = a.get("docs", [999])
        assert empty.ids.tolist() == [] and empty.vectors.shape[0] == 0
        with pytest.raises(errors.InvalidArgument):
            a.get("docs", [-1])
        deep: Any = []
        for _ in range(10_000):
            deep = [deep]
        with pytest.raises(errors.InvalidArgument, match="nested"):
            a.upsert("docs", [5], x[:1], documents=[{"d": deep}])
        with pytest.raises(errors.InvalidArgument, match="squared norm"):
            a.upsert("docs", [6], np.full((1, DIM), 1e20, np.float32))
        a.upsert("docs", np.arange(100, 1100), _vecs(1000, 3))
    with served.client() as admin:
        assert admin.server_info().tenants == 2
        assert admin.train("docs")  # explicit training over the wire
        assert admin.describe_collection("docs").trained
