"""A live tenant move across node processes: one etcd, three `python -m server --cluster`
nodes sharing a bundle directory; the tenant moves n1 -> n2 (driven by n3, so both ends are
remote calls) while two SDK writers and one plain client (forwarded by n3) upsert/delete/grant,
a reader searches and a probe writes straight to the source. Every acknowledgement is logged
and checked at the new home.

Skips as tests/test_cluster.py does (no etcd binary or no aetcd).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from client import Client, calls
from client.cli import main as cli_main
from client.cluster import ClusterClient
from curator.cluster.contracts import MoveRecord
from curator.cluster.etcd_control import EtcdControl
from curator.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TenantMoved,
    TenantMoving,
)
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from tests.test_cluster import Cluster  # skips the module without etcd / aetcd
from tests.test_server_process import ADMIN_KEY

DIM = 16
BASE = 3000  # vectors of the moved tenant before the move
DIRECT = (("x-curator-route", "direct"),)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster-move")
    # A 60 s lease: the controller leaves the move records these tests write by hand alone
    # (it resumes a record whose driver's lease is gone after one lease TTL without change;
    # its recovery is tested in test_cluster_recovery.py).
    c = Cluster(tmp, node_args=["--bundle-dir", str(tmp / "bundles"), "--lease-ttl", "60"])
    try:
        c.start_etcd()
        for n in ("n1", "n2", "n3"):
            c.start_node(n)
        for n in ("n1", "n2", "n3"):
            c.wait_serving(n)
        with ClusterClient([c.address("n1")], ADMIN_KEY, timeout=20) as cc:
            cc.create_collection("mv", DIM)
            for t in ("mover", "fill", "peer"):  # least-loaded first: n1, n2, n3
                cc.create_tenant(t)
            assert {t: p.node for t, p in cc.placements.items()} == {
                "mover": "n1",
                "fill": "n2",
                "peer": "n3",
            }
        yield c
    finally:
        c.stop()


def _vec(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, DIM)).astype(np.float32)


class _Writer(threading.Thread):
    """Upserts, deletes and grants of its own id range through the SDK; `alive`: the last
    acknowledged state of each id (vector bytes, document); `granted`: acknowledged grants;
    `maybe`: ids whose writes since their last acknowledged one failed without a refusal (a
    node killed mid-call may have committed them): the states (None: deleted) they would have
    left; `unsure_grants` likewise."""

    def __init__(
        self,
        address: str,
        w: int,
        stop: threading.Event,
        plain: bool = False,
        tenant: str = "mover",
        coll: str = "mv",
        peer: str | None = "peer",  # None: no grants
        n_base: int = BASE,  # ids [0, n_base) exist before and nobody deletes them
    ) -> None:
        super().__init__(daemon=True)
        self.tenant, self.coll, self.peer, self.n_base = tenant, coll, peer, n_base
        self.cc: ClusterClient | Client = (
            Client(address, ADMIN_KEY, timeout=20, retries=1)  # forwarded by the node
            if plain
            else ClusterClient([address], ADMIN_KEY, timeout=20, max_redirects=14)
        )
        self.rng = np.random.default_rng(100 + w)
        self.base, self.stop, self.w = 10_000 * (w + 1), stop, w
        self.alive: dict[int, tuple[bytes, Any]] = {}
        self.granted: set[int] = set()
        self.maybe: dict[int, list[tuple[bytes, Any] | None]] = {}
        self.unsure_grants: set[int] = set()
        self.acks = 0
        self.errors: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            op = self.rng.choice(["upsert", "upsert", "delete", "grant"])
            tried: dict[int, tuple[bytes, Any] | None] = {}  # id -> its state if it landed
            try:
                if op == "upsert" or not self.alive or (op == "grant" and not self.peer):
                    op = "upsert"
                    ids = self.base + self.rng.choice(300, 4, replace=False)
                    x = _vec(self.rng, 4)
                    docs = [{"w": self.w, "n": n, "i": int(i)} for i in ids]
                    tried = {int(i): (v.tobytes(), d) for i, v, d in zip(ids, x, docs, strict=True)}
                    self.cc.upsert(self.coll, ids, x, docs, tenant=self.tenant)
                elif op == "delete":
                    ids = self.rng.choice(sorted(self.alive), min(2, len(self.alive)), False)
                    tried = {int(i): None for i in ids}
                    self.cc.delete(self.coll, ids, tenant=self.tenant)
                else:  # grants of base vectors nobody deletes
                    ids = self.rng.choice(self.n_base, 3, replace=False)
                    tried = {int(i): None for i in ids}
                    self.cc.grant(self.coll, ids, str(self.peer), tenant=self.tenant)
                    self.granted.update(tried)
                    self.unsure_grants.difference_update(tried)
                for i, state in tried.items() if op != "grant" else ():
                    self.maybe.pop(i, None)
                    if state is None:
                        self.alive.pop(i)
                    else:
                        self.alive[i] = state
                self.acks += 1
            except Exception as e:  # a failed write: reported by the test
                self.errors.append(f"{op}: {type(e).__name__}: {e}")
                if isinstance(e, TenantMoving | TenantMoved):  # refusals change nothing
                    pass
                elif op == "grant":
                    self.unsure_grants.update(tried)
                else:
                    for i, state in tried.items():
                        self.maybe.setdefault(i, []).append(state)
            time.sleep(0.01)
        self.cc.close()


class _Probe(threading.Thread):
    """Upserts straight to the source (no forwarding, no redirects): logs the node
    sequence of every acknowledgement and counts refusals."""

    def __init__(self, address: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.c = Client(address, ADMIN_KEY, timeout=20, retries=1, metadata=DIRECT)
        self.stop = stop
        self.acked: list[tuple[int, int, bytes]] = []  # (id, seq, vector bytes)
        self.refused: dict[str, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        rng = np.random.default_rng(5)
        i = 90_000
        while not self.stop.is_set():
            i += 1
            x = _vec(rng, 1)
            try:
                r = self.c.upsert("mv", [i], x, tenant="mover")
                self.acked.append((i, r.seq, x[0].tobytes()))
            except (TenantMoving, TenantMoved) as e:
                self.refused[type(e).__name__] = self.refused.get(type(e).__name__, 0) + 1
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)
        self.c.close()


class _Reader(threading.Thread):
    def __init__(self, address: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cc = ClusterClient([address], ADMIN_KEY, timeout=20, max_redirects=14)
        self.stop = stop
        self.reads = 0
        self.errors: list[str] = []

    def run(self) -> None:
        q = _vec(np.random.default_rng(9), 2)
        while not self.stop.is_set():
            try:
                r = self.cc.search("mv", q, k=5, tenant="mover")
                assert r.found.all()
                self.reads += 1
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)
        self.cc.close()


def _eventually(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, TenantMoved, TenantMoving):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.timeout(180)
def test_live_move_under_writes(cluster: Cluster) -> None:
    rng = np.random.default_rng(1)
    base = _vec(rng, BASE)
    base_docs = [{"base": i, "text": "é" * (i % 7)} for i in range(BASE)]
    with ClusterClient([cluster.address("n1")], ADMIN_KEY, timeout=30) as cc:
        cc.upsert("mv", np.arange(BASE), base, base_docs, tenant="mover")
        cc.allow_sharing("mover", "peer")
        cc.grant("mv", np.arange(50), "peer", tenant="mover")
    stop = threading.Event()
    writers = [_Writer(cluster.address(n), w, stop) for w, n in enumerate(("n1", "n3"))]
    writers.append(_Writer(cluster.address("n3"), 2, stop, plain=True))  # no SDK
    reader = _Reader(cluster.address("n2"), stop)
    probe = _Probe(cluster.address("n1"), stop)
    for t in (*writers, reader, probe):
        t.start()
    time.sleep(1.0)  # writes before the move
    with Client(cluster.address("n3"), ADMIN_KEY, timeout=120) as admin:
        t0 = time.monotonic()
        report = admin._run(calls.move_tenant("mover", "n2"))
        took = time.monotonic() - t0
    time.sleep(1.0)  # writes after the move
    stop.set()
    for t in (*writers, reader, probe):
        t.join(30)
    print(f"move report: {report}; {took:.2f} s")
    print(f"acks: {[w.acks for w in writers]}, probe {len(probe.acked)} {probe.refused}")

    assert report["phase"] == "done" and report["source"] == "n1" and report["target"] == "n2"
    assert report["epoch"] == 2 and report["fence_seq"] >= report["base_seq"] > 0
    assert report["vectors"] >= BASE and 0 < report["pause_s"] < 5.0
    assert [w.errors for w in writers] == [[], [], []], "writes must ride through the move"
    assert reader.errors == [] and reader.reads > 0
    assert probe.errors == [] and all(w.acks > 0 for w in writers)
    # the source acknowledged nothing after its fence, and refused once it froze
    assert probe.acked and max(seq for _, seq, _ in probe.acked) <= report["fence_seq"]
    assert probe.refused.get("TenantMoved", 0) > 0

    want: dict[int, tuple[bytes, Any]] = {i: (base[i].tobytes(), base_docs[i]) for i in range(BASE)}
    for w in writers:
        want.update(w.alive)
    want.update({i: (v, None) for i, _, v in probe.acked})
    gone = {i for w in writers for i in range(w.base, w.base + 300)} - set(want)
    with Client(cluster.address("n2"), ADMIN_KEY, timeout=30, metadata=DIRECT) as home:
        ids = np.array(sorted(want), np.uint64)
        got = home.get("mv", ids, tenant="mover")
        assert got.ids.tolist() == ids.tolist()
        for i, v, d in zip(got.ids, got.vectors, got.documents, strict=True):
            assert (v.tobytes(), d) == want[int(i)], int(i)
        assert home.get("mv", sorted(gone), tenant="mover").ids.tolist() == []
        granted = set(range(50)).union(*(w.granted for w in writers))
        seen = home.get("mv", np.arange(BASE), tenant="peer", owner="mover").ids.tolist()
        assert sorted(seen) == sorted(granted)
        assert home.count("mv", tenant="mover") == len(want)
    # the peer (homed on n3) reads the grants at their new home
    with ClusterClient([cluster.address("n3")], ADMIN_KEY, timeout=20) as cc:
        assert _eventually(lambda: cc.count("mv", tenant="peer")) == len(granted)
        assert cc.placements["mover"].node == "n2"
    # plain clients through any node reach it; the source redirects direct calls
    probe_ids = np.arange(BASE - 5, BASE)
    for node in ("n1", "n2", "n3"):
        with Client(cluster.address(node), ADMIN_KEY, timeout=20) as plain:

            def same() -> None:
                r = plain.get("mv", probe_ids, tenant="mover")
                assert r.vectors.tobytes() == base[BASE - 5 :].tobytes()

            _eventually(same)
    with Client(cluster.address("n1"), ADMIN_KEY, timeout=20, metadata=DIRECT) as src:
        with pytest.raises(TenantMoved) as moved:
            src.upsert("mv", [1], base[:1], tenant="mover")
        assert moved.value.node == "n2" and moved.value.epoch == 2
        # its local copy is gone (the other tenants here own nothing in "mv")
        assert src.describe_collection("mv").vectors == 0
    with Client(cluster.address("n2"), ADMIN_KEY, timeout=20) as dst:
        assert dst.describe_collection("mv").vectors == len(want)
    bundles = cluster.tmp / "bundles"
    assert [p for p in bundles.rglob("*") if p.is_file()] == []  # the move's are deleted


def _placement(c: Client) -> dict[str, tuple[str, int, str]]:
    _, places, _ = c._run(calls.placement())
    return {t: (p.node, p.epoch, p.state) for t, p in places.items()}


@pytest.mark.timeout(60)
def test_bad_moves_fail_clearly_and_change_nothing(cluster: Cluster) -> None:
    with Client(cluster.address("n2"), ADMIN_KEY, timeout=20) as admin:
        before = _placement(admin)
        home = before["fill"][0]
        with pytest.raises(NotFound, match="live node"):
            admin._run(calls.move_tenant("fill", "n9"))
        with pytest.raises(NotFound, match="placed tenant"):
            admin._run(calls.move_tenant("nobody", "n1"))
        with pytest.raises(InvalidArgument, match="node id"):
            admin._run(calls.move_tenant("fill", "../n1"))
        with pytest.raises(InvalidArgument):
            admin._run(calls.move_tenant("", "n1"))
        with pytest.raises(FailedPrecondition):
            admin._run(calls.move_tenant("fill", home))
        _, key = admin.issue_key("fill", "not an admin")
        with Client(cluster.address("n2"), key, timeout=20) as tenant:
            with pytest.raises(PermissionDenied):
                tenant._run(calls.move_tenant("fill", "n1"))
        assert _placement(admin) == before
        # the node calls check every field: no path out of the bundle store
        stub = pb_grpc.NodesStub(admin._channel)
        md = (("authorization", f"Bearer {ADMIN_KEY}"),)
        for key in ("../../etc/passwd", "/abs", "a//b", "a/../b", "x" * 600):
            with pytest.raises(Exception, match="bundle key"):
                stub.ExportTenant(pb.BundleRequest(tenant="fill", key=key), metadata=md)
        with pytest.raises(Exception, match="node id"):
            stub.MarkMoved(pb.MarkMovedRequest(tenant="fill", node="n1/..", epoch=1), metadata=md)
        assert _placement(admin) == before
    assert list((cluster.tmp / "bundles").rglob("passwd")) == []


@pytest.mark.timeout(120)
def test_an_interrupted_move_aborts_or_resumes(cluster: Cluster) -> None:
    """A move record left by a mover that died in `prepare`: a new move is refused, --abort
    undoes it, a recorded one again is finished by --resume."""
    ctl = EtcdControl(f"127.0.0.1:{cluster.etcd_port}")
    ctl.start()
    try:
        with Client(cluster.address("n1"), ADMIN_KEY, timeout=60) as admin:
            before = _placement(admin)["fill"]
            with pytest.raises(NotFound, match="in progress"):
                admin._run(calls.move_tenant("fill", abort=True))
            for then in ("abort", "resume"):
                assert ctl.cas_move(None, MoveRecord("fill", before[0], "n3", "prepare"))
                with pytest.raises(FailedPrecondition, match="in progress"):
                    admin._run(calls.move_tenant("fill", "n1"))  # the CAS in etcd refuses

                def act(**how: bool) -> dict[str, Any]:
                    try:
                        return admin._run(calls.move_tenant("fill", **how))
                    except NotFound as e:  # n1's watch has not seen the record yet
                        raise AssertionError(str(e)) from None

                if then == "abort":
                    report = _eventually(lambda: act(abort=True))
                    assert report["phase"] == "aborted" and _placement(admin)["fill"] == before
                else:

                    def wrong_target() -> None:
                        with pytest.raises(InvalidArgument, match="the move's"):
                            try:
                                admin._run(calls.move_tenant("fill", "n1", resume=True))
                            except NotFound as e:
                                raise AssertionError(str(e)) from None

                    _eventually(wrong_target)
                    report = act(resume=True)
                    assert report["phase"] == "done" and report["target"] == "n3"
                    assert _placement(admin)["fill"] == ("n3", before[1] + 1, "serving")
                assert ctl.move("fill") is None
    finally:
        ctl.close()


@pytest.mark.timeout(60)
def test_forwarding_rides_through_a_handoff(cluster: Cluster) -> None:
    """A plain client's write forwarded to a home that refuses it (TENANT_MOVING, as during a
    handoff) is asked again by the forwarding node and acknowledged once the home serves."""
    with ClusterClient([cluster.address("n1")], ADMIN_KEY, timeout=20) as cc:
        cc.create_tenant("frz")
        home = cc.placements["frz"].node
    other = next(n for n in ("n1", "n2", "n3") if n != home)
    md = (("authorization", f"Bearer {ADMIN_KEY}"),)
    x = np.ones((1, DIM), np.float32)
    with Client(cluster.address(home), ADMIN_KEY, timeout=20, metadata=DIRECT) as h:
        nodes = pb_grpc.NodesStub(h._channel)
        nodes.FreezeTenant(pb.TenantRef(name="frz"), metadata=md)
        done: list[Any] = []
        with Client(cluster.address(other), ADMIN_KEY, timeout=20) as plain:
            t = threading.Thread(
                target=lambda: done.append(plain.upsert("mv", [1], x, tenant="frz"))
            )
            t.start()
            time.sleep(0.4)
            with pytest.raises(TenantMoving):  # the home itself refuses while frozen
                h.upsert("mv", [2], x, tenant="frz")
            assert done == []  # not acknowledged while frozen
            nodes.UnfreezeTenant(pb.TenantRef(name="frz"), metadata=md)
            t.join(20)
        assert len(done) == 1 and done[0].count == 1
        assert h.get("mv", [1, 2], tenant="frz").ids.tolist() == [1]


@pytest.mark.timeout(120)
def test_cli_move_and_drain(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--address", cluster.address("n1"), "--key", ADMIN_KEY, "--json", "cluster"]
    with Client(cluster.address("n1"), ADMIN_KEY, timeout=20) as admin:
        epoch = _placement(admin)["fill"][1]
        assert cli_main([*args, "move", "fill", "--to", "n1"]) == 0
        assert '"target": "n1"' in capsys.readouterr().out
        assert _placement(admin)["fill"][:2] == ("n1", epoch + 1)
        assert cli_main([*args, "drain", "n3", "--quiet"]) == 0
        out = capsys.readouterr().out
        assert '"tenant": "peer"' in out
        places = _placement(admin)
        assert all(node != "n3" for node, _, _ in places.values())
        assert all(state == "serving" for _, _, state in places.values())
    # back to where it came from: n1's tombstone goes, it serves the tenant again
    assert cli_main([*args, "move", "mover", "--to", "n1"]) == 0
    capsys.readouterr()
    with Client(cluster.address("n1"), ADMIN_KEY, timeout=20, metadata=DIRECT) as n1:
        assert n1.get("mv", np.arange(5), tenant="mover").ids.tolist() == list(range(5))
        assert n1.upsert("mv", [7], np.ones((1, DIM), np.float32), tenant="mover").count == 1
    assert cli_main([*args, "drain", "n7"]) == 1
    assert "expected a node of the cluster" in capsys.readouterr().err
    assert cli_main([*args, "move", "fill"]) == 1
    assert "expected --to NODE" in capsys.readouterr().err
