"""kill -9 of the source or the target node of a live move, at each phase, across processes.

One etcd and three `python -m server --cluster` nodes (a 3 s lease, a shared bundle
directory). Each case moves a fresh tenant of a few hundred vectors between two nodes, driven
by the third (`Admin.MoveTenant` on it, never the controller), while an SDK writer upserts,
deletes and grants. The driving node waits at the start of the case's phase (the test-only
gate of server/moves.py, CURATOR_TEST_MOVE_GATE); the test kills the source or the target
with SIGKILL there, lets the driver go on (against the dead node, or, `late`, once the node
has restarted), restarts the node on its data directory, and waits for the cluster to finish
or abort the move on its own (the controller). Then: the move record is gone, the placement
serves at exactly one node of the two (the other redirects and holds no vectors), and every
write the writer saw acknowledged is there byte for byte (vectors, documents, grants); reads
of the tenant and of its grantee succeed.

Cost: one restart per case (2-17 s each on a busy 2-core box, most of it the victim's
start-up). The default run covers three cases (target at catchup: aborted; source at flip:
rolled forward; source at flip, the driver going on once the source is back) and the
long-phase test: 67 s with the cluster's start in the full suite at load 4.5 on 2 cores;
CURATOR_SLOW_TESTS=1 runs the whole matrix (both ends at copy, catchup, handoff, flip,
activate and cleanup, and four `late` variants: 145 s at load 5).

Skips as tests/test_cluster.py does (no etcd binary or no aetcd).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from client import Client, calls
from client.cluster import ClusterClient
from curator.cluster.etcd_control import EtcdControl
from curator.errors import TenantMoved
from tests import test_cluster_recovery
from tests.test_cluster import Cluster  # skips the module without etcd / aetcd
from tests.test_cluster_move import _Writer
from tests.test_cluster_recovery import (
    DIM,
    DIRECT,
    TTL,
    _check_home,
    _controller,
    _seed,
    _wait,
)
from tests.test_server_process import ADMIN_KEY

ctl = test_cluster_recovery.ctl  # the fixture (a control-plane client), on this module's cluster

N = 300  # vectors of the moved tenant
NODES = ("n1", "n2", "n3")
PHASES = ("copy", "catchup", "handoff", "flip", "activate", "cleanup")
# (victim, phase, late): late, the driver goes on only once the victim is back
DEFAULT = [
    ("target", "catchup", False),  # aborts: the target is gone before the flip
    ("source", "flip", False),  # rolls forward: the flip needs no source
    ("source", "flip", True),  # the restarted source must not acknowledge past the fence
]
FULL = [(v, p, False) for p in PHASES for v in ("source", "target")] + [
    ("source", "handoff", True),
    ("source", "flip", True),
    ("target", "flip", True),
    ("target", "activate", True),
]
CASES = FULL if os.environ.get("CURATOR_SLOW_TESTS") == "1" else DEFAULT


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster-node-kill")
    (tmp / "gates").mkdir()
    c = Cluster(
        tmp,
        node_args=["--bundle-dir", str(tmp / "bundles"), "--lease-ttl", str(TTL)],
        node_env={"CURATOR_TEST_MOVE_GATE": str(tmp / "gates")},
    )
    try:
        c.start_all(NODES)
        yield c
    finally:
        c.stop()


def _roles(ctl: EtcdControl, victim: str, phase: str) -> tuple[str, str, str]:
    """(source, target, driver): the driver is not the controller (so nothing but the
    controller's scan can finish a move it gave up); the victim is the controller in every
    other case (so that the role moves too)."""
    boss = _wait("a controller", lambda: _controller(ctl), 20)
    driver = next(n for n in NODES if n != boss)
    other = next(n for n in NODES if n not in (boss, driver))
    kill_boss = PHASES.index(phase) % 2 == 0
    victim_node = boss if kill_boss else other
    survivor = other if kill_boss else boss
    if victim == "source":
        return victim_node, survivor, driver
    return survivor, victim_node, driver


def _move(address: str, tenant: str, to: str, out: list[Any]) -> None:
    with Client(address, ADMIN_KEY, timeout=60) as c:
        try:
            out.append(c._run(calls.move_tenant(tenant, to))["phase"])
        except Exception as e:  # a node of the move died: the cluster finishes it
            out.append(f"{type(e).__name__}: {e}")


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("victim", "phase", "late"), CASES)
def test_kill9_of_a_node_of_the_move(
    cluster: Cluster, ctl: EtcdControl, victim: str, phase: str, late: bool
) -> None:
    src, dst, driver = _roles(ctl, victim, phase)
    dead = src if victim == "source" else dst
    tenant = f"k-{victim}-{phase}{'-late' if late else ''}"
    coll, peer = tenant.replace("-", "_"), f"{tenant}-peer"
    with ClusterClient([cluster.address(driver)], ADMIN_KEY, timeout=20) as cc:
        cc.create_collection(coll, DIM)
    ctl.create_tenant(peer, driver)  # the grantee, on the driving node: grants cross nodes
    base = _seed(cluster, ctl, tenant, src, N, coll)
    with Client(cluster.address(src), ADMIN_KEY, timeout=20) as c:
        c.allow_sharing(tenant, peer)
    gate = cluster.tmp / "gates" / f"{tenant}.{phase}"
    gate.touch()
    stop = threading.Event()
    writer = _Writer(cluster.address(driver), 0, stop, tenant=tenant, coll=coll, peer=peer,
                     n_base=N)  # fmt: skip
    writer.start()
    outcome: list[Any] = []
    mover = threading.Thread(target=_move, args=(cluster.address(driver), tenant, dst, outcome))
    try:
        _wait("acknowledged writes", lambda: writer.acks >= 5, 30)
        mover.start()
        _wait(f"the {phase} phase", lambda: (ctl.move(tenant) or _NoMove).phase == phase, 30)
        acked = writer.acks
        _wait("writes at the phase", lambda: writer.acks > acked or phase in ("flip", "activate"))
        cluster.procs[dead].send_signal(signal.SIGKILL)
        cluster.procs[dead].wait(10)
        t0 = time.monotonic()
        if not late:
            gate.unlink()
            mover.join(60)
        cluster.start_node(dead)
        back = cluster.wait_serving(dead)
        if late:
            time.sleep(0.5)  # writes reach the restarted node before the driver goes on
            gate.unlink()
            mover.join(60)
        _wait("the move ended", lambda: ctl.move(tenant) is None, 90)
        took = time.monotonic() - t0
        time.sleep(0.3)  # writes after the move
    finally:
        gate.unlink(missing_ok=True)
        stop.set()
        writer.join(30)
    p = ctl.placement(tenant)
    assert p is not None and p.state == "serving" and p.node in (src, dst)
    ended = "done" if p.node == dst else "aborted"
    print(f"\n{victim} {dead} killed at {phase}{' (late)' if late else ''}: back to SERVING in "
          f"{back:.1f} s, the move {ended} {took:.1f} s after the kill (driver {driver}: "
          f"{outcome}); acks {writer.acks}, failed {_kinds(writer.errors)}, unsure ids "
          f"{len(writer.maybe)}; loadavg {open('/proc/loadavg').read().split()[0]}")  # fmt: skip
    assert p.epoch == (2 if ended == "done" else 1)
    if phase in ("activate", "cleanup"):  # after the flip: only forward
        assert ended == "done"
    # the call that drove the move: done, or a failure that says the move is the controller's
    assert outcome[0] == "done" or "left at its" in outcome[0], outcome
    assert writer.acks > 0
    _check_home(cluster, p.node, tenant, base, [writer], coll)
    for node in NODES:  # exactly one node serves it; the other end holds nothing of it
        if node == p.node:
            continue
        with Client(cluster.address(node), ADMIN_KEY, timeout=20, metadata=DIRECT) as c:
            with pytest.raises(TenantMoved) as moved:
                c.count(coll, tenant=tenant)
            assert moved.value.node == p.node
            assert c.describe_collection(coll).vectors == 0
    with ClusterClient([cluster.address(dead)], ADMIN_KEY, timeout=20) as cc:
        assert cc.search(coll, base[:3], k=5, tenant=tenant).found.all()
        granted = writer.granted
        assert len(granted) <= cc.count(coll, tenant=peer) <= len(granted | writer.unsure_grants)
    assert [q for q in (cluster.tmp / "bundles").rglob("*") if q.is_file()] == []


def _kinds(errors: list[str]) -> dict[str, int]:
    return dict(Counter(e.split(":")[1].strip() for e in errors))


class _NoMove:
    phase = ""


@pytest.mark.timeout(90)
def test_a_long_phase_of_a_move_the_controller_drives_is_not_driven_twice(
    cluster: Cluster, ctl: EtcdControl
) -> None:
    """The controller drives a move (a MoveTenant call reached it) whose copy outlasts a
    lease TTL without a change of its record (as a big tenant's does): its own scan must not
    take it for stranded and drive it a second time beside the call (it did: the two raced,
    and the call could fail with LostMove while the move went on)."""
    boss = _wait("a controller", lambda: _controller(ctl), 20)
    src, dst = [n for n in NODES if n != boss]
    tenant = "k-long-copy"
    coll = tenant.replace("-", "_")
    with ClusterClient([cluster.address(boss)], ADMIN_KEY, timeout=20) as cc:
        cc.create_collection(coll, DIM)
    base = _seed(cluster, ctl, tenant, src, N, coll)
    gate = cluster.tmp / "gates" / f"{tenant}.copy"
    gate.touch()
    outcome: list[Any] = []
    mover = threading.Thread(target=_move, args=(cluster.address(boss), tenant, dst, outcome))
    try:
        mover.start()
        _wait("the copy phase", lambda: (ctl.move(tenant) or _NoMove).phase == "copy", 30)
        rec = ctl.move(tenant)
        time.sleep(TTL + 2.5)  # past the controller's stall time (one lease TTL)
        assert ctl.move(tenant) == rec  # untouched: not claimed, not released
    finally:
        gate.unlink(missing_ok=True)
        mover.join(60)
    assert outcome == ["done"]
    p = ctl.placement(tenant)
    assert p is not None and (p.node, p.epoch, p.state) == (dst, 2, "serving")
    log = (cluster.tmp / f"{boss}.log").read_text()
    assert f"resuming the stranded move of {tenant!r}" not in log
    _check_home(cluster, dst, tenant, base, [], coll)
