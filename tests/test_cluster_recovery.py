"""The cluster without the people who started a move: etcd stopped for 10 s, a move whose
driver is killed with -9 before or after its flip, and the controller itself killed with -9.
One etcd and three `python -m server --cluster` nodes with a 3 s lease (--lease-ttl) and a
shared bundle directory; writers log every acknowledgement, checked at the final home.

Skips as tests/test_cluster.py does (no etcd binary or no aetcd).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from client import Client, calls
from client.cluster import ClusterClient
from curator.cluster.etcd_control import EtcdControl
from curator.errors import TenantMoved, Unavailable
from tests.test_cluster import ROOT, Cluster, _env, _free_port  # skips without etcd / aetcd
from tests.test_cluster_move import _Writer
from tests.test_server_process import ADMIN_KEY

DIM = 16
BASE = 3000
TTL = 3
DIRECT = (("x-curator-route", "direct"),)
_BEFORE_FLIP = ("prepare", "copy", "catchup", "handoff", "flip")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster-recovery")
    c = Cluster(tmp, node_args=["--bundle-dir", str(tmp / "bundles"), "--lease-ttl", str(TTL)])
    c.metrics_port = _free_port()  # type: ignore[attr-defined]
    try:
        c.start_all(("n1", "n2", "n3"), {"n1": ("--metrics-port", str(c.metrics_port))})  # type: ignore[attr-defined]
        with ClusterClient([c.address("n1")], ADMIN_KEY, timeout=20) as cc:
            cc.create_collection("rc", DIM)
        yield c
    finally:
        c.stop()


@pytest.fixture
def ctl(cluster: Cluster) -> Iterator[EtcdControl]:
    control = EtcdControl(f"127.0.0.1:{cluster.etcd_port}")
    control.start()
    yield control
    control.close()


def _wait(what: str, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def _metrics(cluster: Cluster) -> dict[str, float]:
    url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"  # type: ignore[attr-defined]
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _seed(
    cluster: Cluster, ctl: EtcdControl, tenant: str, home: str, n: int = BASE, coll: str = "rc"
) -> np.ndarray:
    """Register `tenant` on `home` and give it `n` vectors with documents."""
    ctl.create_tenant(tenant, home)
    base = np.random.default_rng(len(tenant)).standard_normal((n, DIM)).astype(np.float32)
    with Client(cluster.address(home), ADMIN_KEY, timeout=30) as c:

        def upsert() -> bool:
            try:
                c.upsert(coll, np.arange(n), base, [{"b": i} for i in range(n)], tenant=tenant)
                return True
            except Exception:  # the home has not mirrored the registry yet
                return False

        _wait("seed", upsert, 10)
    return base


def _check_home(
    cluster: Cluster,
    home: str,
    tenant: str,
    base: np.ndarray,
    writers: list[_Writer],
    coll: str = "rc",
) -> None:
    """Every acknowledged write is at `home`, byte for byte; nothing deleted came back; an id
    whose later writes failed unacknowledged (`_Writer.maybe`) is in its acknowledged state
    or in one of those; every acknowledged grant is there, and no other but failed ones."""
    want: dict[int, tuple[bytes, Any] | None] = {
        i: (base[i].tobytes(), {"b": i}) for i in range(len(base))
    }
    maybe: dict[int, list[tuple[bytes, Any] | None]] = {}
    for w in writers:
        want.update({i: None for i in range(w.base, w.base + 300)})
        want.update(w.alive)
        for i, states in w.maybe.items():
            maybe.setdefault(i, []).extend(states)
    with Client(cluster.address(home), ADMIN_KEY, timeout=30, metadata=DIRECT) as h:
        ids = np.array(sorted(want), np.uint64)
        got = h.get(coll, ids, tenant=tenant)
        have = {
            int(i): (v.tobytes(), d)
            for i, v, d in zip(got.ids, got.vectors, got.documents, strict=True)
        }
        for i, state in want.items():
            assert have.get(i) == state or have.get(i) in maybe.get(i, []), i
        if not maybe:
            assert h.count(coll, tenant=tenant) == sum(s is not None for s in want.values())
        for peer in {w.peer for w in writers if w.peer is not None}:
            granted = set().union(*(w.granted for w in writers if w.peer == peer))
            unsure_grants = set().union(*(w.unsure_grants for w in writers if w.peer == peer))
            seen = h.get(coll, np.arange(len(base)), tenant=peer, owner=tenant).ids.tolist()
            assert granted <= set(seen) <= granted | unsure_grants, peer


@pytest.mark.timeout(150)
def test_etcd_down_10s_stable_tenants_serve_creates_and_moves_fail_fast(
    cluster: Cluster, ctl: EtcdControl
) -> None:
    for t, home in (("ed-1", "n1"), ("ed-2", "n2")):
        _seed(cluster, ctl, t, home)
    for n in ("n1", "n2", "n3"):  # what a move's headroom check reads (whole MiB)
        room = ctl.node_facts(n)["headroom"]
        assert room > 0 and room % (1 << 20) == 0
    x = np.eye(DIM, dtype=np.float32)[:4]
    stop = threading.Event()
    acks, errors = [0], []

    def serve() -> None:  # stable tenants: writes and reads as usual, all through the outage
        with ClusterClient([cluster.address("n3")], ADMIN_KEY, timeout=5) as cc:
            i = 0
            while not stop.is_set():
                i += 1
                for t in ("ed-1", "ed-2"):
                    try:
                        assert cc.upsert("rc", [50_000 + i % 100], x[:1], tenant=t).count == 1
                        assert cc.search("rc", x, k=3, tenant=t).found.all()
                        acks[0] += 1
                    except Exception as e:
                        errors.append(f"{t}: {type(e).__name__}: {e}")
                time.sleep(0.02)

    before = _metrics(cluster)
    th = threading.Thread(target=serve)
    th.start()
    time.sleep(0.5)
    down = time.monotonic()
    cluster.stop_etcd()
    try:
        with Client(cluster.address("n1"), ADMIN_KEY, timeout=20) as admin:
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                admin.create_tenant("ed-3")
            assert time.monotonic() - t0 < 5  # fails fast
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                admin._run(calls.move_tenant("ed-1", "n2"))
            assert time.monotonic() - t0 < 5
        time.sleep(max(0.0, 10.0 - (time.monotonic() - down)))
        outage = time.monotonic() - down
    finally:
        cluster.start_etcd()
    stop.set()
    th.join(30)
    assert errors == [] and acks[0] > 50, (errors[:3], acks)
    assert outage >= 10.0
    with Client(cluster.address("n1"), ADMIN_KEY, timeout=20) as admin:

        def retried(fn: Callable[[], Any]) -> Any:
            try:
                return fn() or True
            except Unavailable:
                return False

        _wait("a create after etcd", lambda: retried(lambda: admin.create_tenant("ed-3")), 30)
        report = _wait(
            "a move after etcd",
            lambda: retried(lambda: admin._run(calls.move_tenant("ed-1", "n2"))),
            30,
        )
        assert report["phase"] == "done" and report["target"] == "n2"
        _, places, _ = admin._run(calls.placement())
    # the move's metrics on the node that drove it (n1)
    after = _metrics(cluster)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('curator_moves_total{how="call",outcome="done"}') == 1
    assert grew('curator_moves_total{how="call",outcome="failed"}') >= 1  # the outage
    assert grew('curator_move_phase_seconds_count{phase="copy"}') == 1
    assert grew("curator_move_pause_seconds_count") == 1
    assert grew("curator_move_bytes_total") > BASE * DIM * 4
    assert grew("curator_move_vectors_total") >= BASE
    for node in ("n1", "n2", "n3"):
        n = sum(p.node == node for p in places.values())
        assert after[f'curator_placements{{node="{node}"}}'] == n
    with Client(cluster.address("n1"), ADMIN_KEY, timeout=20) as plain:
        assert plain.get("rc", [0], tenant="ed-2").ids.tolist() == [0]  # forwarded to n2
    fwd = 'curator_forwarded_requests_total{method="Get",outcome="OK"}'
    assert _metrics(cluster).get(fwd, 0) > before.get(fwd, 0)


def _controller(ctl: EtcdControl) -> str:
    got = ctl.raw("controller")
    return str(got["node"]) if isinstance(got, dict) else ""


@pytest.mark.timeout(150)
def test_kill9_of_the_driving_controller_before_the_flip(
    cluster: Cluster, ctl: EtcdControl
) -> None:
    """The controller drives a move and is killed in its copy phase: another node takes the
    role, finds the move stranded (its driver's lease gone) and finishes it."""
    boss = _wait("a controller", lambda: _controller(ctl), 20)
    src, dst = [n for n in ("n1", "n2", "n3") if n != boss]
    base = _seed(cluster, ctl, "rk1", src)
    stop = threading.Event()
    writers = [_Writer(cluster.address(n), w, stop, tenant="rk1", coll="rc", peer=None)
               for w, n in enumerate((src, dst))]  # fmt: skip
    for w in writers:
        w.start()
    time.sleep(0.5)
    caller = Client(cluster.address(boss), ADMIN_KEY, timeout=60)
    # the caller sees the node die; the move is not the caller's to finish
    driving = threading.Thread(target=_ignore, args=(caller, calls.move_tenant("rk1", dst)))
    driving.start()
    _wait("the copy phase", lambda: (ctl.move("rk1") or _NoMove).phase in _BEFORE_FLIP[:3], 30)
    cluster.procs[boss].send_signal(signal.SIGKILL)
    cluster.procs[boss].wait(10)
    t0 = time.monotonic()
    time.sleep(0.3)
    rec = ctl.move("rk1")
    assert rec is not None and rec.phase in _BEFORE_FLIP and rec.driver == boss
    new_boss = _wait(
        "a new controller", lambda: (_controller(ctl) or boss) != boss and _controller(ctl), 20
    )
    took_role = time.monotonic() - t0
    _wait("the stranded move finished", lambda: ctl.move("rk1") is None, 60)
    took = time.monotonic() - t0
    time.sleep(0.5)  # writes after the move
    stop.set()
    for w in writers:
        w.join(30)
    driving.join(5)
    caller.close()
    acks = [w.acks for w in writers]
    print(f"\ncontroller {boss} killed: {new_boss} took the role in {took_role:.1f} s, "
          f"the move ended {took:.1f} s after the kill; acks {acks}")  # fmt: skip
    assert [w.errors for w in writers] == [[], []] and all(w.acks > 0 for w in writers)
    p = ctl.placement("rk1")
    assert p is not None and p.state == "serving"
    assert (p.node, p.epoch) == (dst, 2)  # resumed, not aborted: both ends are alive
    _check_home(cluster, dst, "rk1", base, writers)
    assert [q for q in (cluster.tmp / "bundles").rglob("*") if q.is_file()] == []


class _NoMove:
    phase = ""


def _ignore(c: Client, call: Any) -> None:
    try:
        c._run(call)
    except Exception:  # Unavailable: the node driving the move died
        pass


_DRIVER = """
import os, sys, time
import grpc
from curator.cluster.bundle_store import DirectoryStore
from curator.cluster.etcd_control import EtcdControl
from curator.cluster.mover import Mover
from server.remote_ops import RemoteNodeOps

etcd, bundles, tenant, target, stop_at = sys.argv[1:]
ctl = EtcdControl(etcd, lease_ttl=int(os.environ["TTL"]))
ctl.start()
md = [("authorization", "Bearer " + os.environ["CURATOR_ADMIN_KEY"])]
ops = {n: RemoteNodeOps(grpc.insecure_channel(i.address), md,
                        lambda n=n: int(ctl.node_facts(n).get("headroom", 0)))
       for n, i in ctl.nodes().items()}

def hook(phase):
    print(phase, flush=True)
    if phase == stop_at:
        time.sleep(600)

Mover(ctl, ops, DirectoryStore(bundles), driver=("script", ctl.session()), hook=hook).move(
    tenant, target)
"""


@pytest.mark.timeout(150)
def test_kill9_of_a_driving_process_after_the_flip(cluster: Cluster, ctl: EtcdControl) -> None:
    """A process driving a move (the Mover over the nodes' Nodes service) is killed after the
    flip, while the target still holds the tenant's writes: the controller rolls it forward."""
    alive = sorted(n for n, p in cluster.procs.items() if p.poll() is None)
    src, dst = alive[0], alive[-1]
    base = _seed(cluster, ctl, "rk2", src)
    stop = threading.Event()
    writers = [_Writer(cluster.address(n), 10 + w, stop, tenant="rk2", coll="rc", peer=None)
               for w, n in enumerate((src, dst))]  # fmt: skip
    for w in writers:
        w.start()
    time.sleep(0.5)
    args = [f"127.0.0.1:{cluster.etcd_port}", str(cluster.tmp / "bundles"), "rk2", dst, "activate"]
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**_env(), "TTL": str(TTL)},
    )
    try:
        assert driver.stdout is not None
        phases = []
        while not phases or phases[-1] != "activate":
            line = driver.stdout.readline().decode().strip()
            assert line, f"the driver ended early after {phases}"
            phases.append(line)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
    t0 = time.monotonic()
    rec = ctl.move("rk2")
    assert rec is not None and rec.phase == "activate" and rec.driver == "script"
    p = ctl.placement("rk2")
    assert p is not None and (p.node, p.state) == (dst, "activating")  # flipped, not active
    _wait("the stranded move finished", lambda: ctl.move("rk2") is None, 60)
    took = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    for w in writers:
        w.join(30)
    acks, refused = [w.acks for w in writers], [len(w.errors) for w in writers]
    print(f"\ndriver killed after the flip: the move ended {took:.1f} s later; "
          f"acks {acks}, refused {refused}")  # fmt: skip
    # Writes during the stall were refused (TENANT_MOVING, never acknowledged) or rode through.
    errors = [e for w in writers for e in w.errors]
    assert all("TenantMoving" in e for e in errors), errors[:3]
    assert all(w.acks > 0 for w in writers)
    p = ctl.placement("rk2")
    assert p is not None and (p.node, p.epoch, p.state) == (dst, 2, "serving")
    _check_home(cluster, dst, "rk2", base, writers)
    with Client(cluster.address(src), ADMIN_KEY, timeout=20, metadata=DIRECT) as old:
        with pytest.raises(TenantMoved):  # the source redirects; its copy was dropped
            old.count("rc", tenant="rk2")
    assert [q for q in (cluster.tmp / "bundles").rglob("*") if q.is_file()] == []


@pytest.mark.timeout(90)
def test_kill9_of_the_cli_mid_move_the_node_finishes_it(cluster: Cluster, ctl: EtcdControl) -> None:
    """`curator cluster move` only asks a node to move the tenant: killing the CLI leaves the
    node driving it to the end."""
    alive = sorted(n for n, p in cluster.procs.items() if p.poll() is None)
    src, dst = alive[-1], alive[0]
    base = _seed(cluster, ctl, "rk3", src)
    cli = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "--address", cluster.address(src), "--key",
         ADMIN_KEY, "cluster", "move", "rk3", "--to", dst],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(),
    )  # fmt: skip
    try:
        _wait("the move started", lambda: ctl.move("rk3") is not None, 30)
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
    finally:
        if cli.poll() is None:
            cli.kill()
    rec = ctl.move("rk3")
    killed_at = rec.phase if rec is not None else "done"
    _wait("the move finished", lambda: ctl.move("rk3") is None, 60)
    p = ctl.placement("rk3")
    assert p is not None and (p.node, p.epoch, p.state) == (dst, 2, "serving"), killed_at
    _check_home(cluster, dst, "rk3", base, [])


@pytest.mark.timeout(60)
def test_election_one_leader_and_a_handover(cluster: Cluster) -> None:
    """Two campaigners besides the nodes: at most one process holds the role at a time; a
    resignation hands it over at once."""
    from curator.cluster.election import Election

    controls = [EtcdControl(f"127.0.0.1:{cluster.etcd_port}", lease_ttl=2) for _ in range(2)]
    for c in controls:
        c.start()
    try:
        watcher = controls[0]
        holder = _controller(watcher)
        assert holder in cluster.procs  # a node holds it
        elections = [Election(c, f"x{i}") for i, c in enumerate(controls)]
        for e in elections:
            e.start()
        time.sleep(1.0)
        assert not any(e.is_leader() for e in elections)  # the node keeps it
        alive = [n for n, p in cluster.procs.items() if p.poll() is None]
        for n in alive:  # stop every node's campaign: their leases go with SIGTERM
            cluster.procs[n].send_signal(signal.SIGTERM)
        for n in alive:
            cluster.procs[n].wait(30)
        first = _wait("a campaigner leads", lambda: [e for e in elections if e.is_leader()], 20)
        assert len(first) == 1 and _controller(watcher) == first[0].node_id
        first[0].resign()
        other = next(e for e in elections if e is not first[0])
        _wait("the handover", other.is_leader, 5)
        assert not first[0].is_leader() and _controller(watcher) == other.node_id
    finally:
        for c in controls:
            c.close()
