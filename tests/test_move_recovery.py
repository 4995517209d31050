"""Moves that outlive their driver, and moves that cannot fit: the controller's scan for
stranded moves (curator/cluster/controller.py), a driver that lost its move to another, an
abort racing a flip, and the target's headroom check, between two in-process nodes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator.cluster import headroom
from curator.cluster.controller import Controller
from curator.cluster.mover import LostMove, Mover
from curator.config import DatabaseConfig
from curator.database import Database
from curator.errors import FailedPrecondition, Unavailable
from tests.test_move import BASE, Cluster, Crash, _crash_at, _vecs


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


def _placed(cluster: Cluster) -> tuple[str, int, str]:
    p = cluster.control.placement("a")
    assert p is not None
    return p.node, p.epoch, p.state


@pytest.mark.timeout(60)
def test_the_target_without_room_refuses_before_importing(cluster: Cluster) -> None:
    cluster.dbs["n2"].close(snapshot=False)
    small = DatabaseConfig(data_dir=str(cluster.root / "n2"), max_map_size=6 << 20)
    cluster.dbs["n2"] = Database(small, background=False)
    free = headroom.headroom(cluster.dbs["n2"])
    assert 0 < free < 6 << 20
    with pytest.raises(FailedPrecondition, match="room for tenant 'a'") as refused:
        cluster.mover().move("a", "n2")
    msg = str(refused.value)
    assert f"got {free} bytes free" in msg and "bundle is" in msg  # the numbers, named
    size = int(msg.split("bundle is ")[1].split()[0])
    assert size > BASE * 16 * 4  # at least the raw vectors
    assert _placed(cluster) == ("n1", 1, "serving") and cluster.control.move("a") is None
    assert not cluster.dbs["n2"].has_tenant("a")
    assert list(cluster.store.keys()) == []
    cluster.dbs["n1"].upsert("c", [1], _vecs(1, 1), tenant="a")  # the source writes on
    assert headroom.headroom(cluster.dbs["n1"]) > 8 << 20  # no cap: the disk's free space
    headroom.check_fits("a", "n1", 1000, 20 << 20)  # fits: no error
    with pytest.raises(FailedPrecondition, match="2x"):
        headroom.check_fits("a", "n1", 7 << 20, 20 << 20)


@pytest.mark.timeout(60)
def test_a_driver_that_lost_its_move_stops_and_the_new_one_finishes(cluster: Cluster) -> None:
    def claim(phase: str) -> None:
        if phase == "handoff":  # a controller takes the move over meanwhile
            rec = cluster.control.move("a")
            assert rec is not None
            new = dataclasses.replace(rec, driver="n3", driver_lease=33)
            assert cluster.control.cas_move(rec, new) is not None

    old = cluster.mover(hook=claim, driver=("n9", 9))
    with pytest.raises(LostMove):
        old.move("a", "n2")
    rec = cluster.control.move("a")  # not aborted: the move is the new driver's
    assert rec is not None and rec.phase == "handoff" and rec.driver_lease == 33
    assert _placed(cluster)[0] == "n1"
    report = cluster.mover(driver=("n3", 33)).resume("a")
    assert report.phase == "done" and _placed(cluster) == ("n2", 2, "serving")
    assert cluster.dbs["n2"].count("c", tenant="a") == BASE


@pytest.mark.timeout(60)
def test_an_abort_racing_the_flip_wins_and_nothing_flips(cluster: Cluster) -> None:
    aborted = []

    def abort_at_flip(phase: str) -> None:
        if phase == "flip" and not aborted:  # frozen, final delta shipped; someone aborts
            aborted.append(cluster.mover(driver=("cli", 0)).abort("a").phase)

    with pytest.raises(FailedPrecondition, match="in handoff"):
        cluster.mover(hook=abort_at_flip, driver=("n9", 9)).move("a", "n2")
    assert aborted == ["aborted"] and cluster.control.move("a") is None
    assert _placed(cluster) == ("n1", 1, "serving")
    cluster.dbs["n1"].upsert("c", [1], _vecs(1, 1), tenant="a")  # the source acknowledges
    assert cluster.dbs["n2"].count("c", tenant="a") == 0


@pytest.mark.timeout(60)
def test_the_controller_resumes_a_move_whose_driver_died(cluster: Cluster) -> None:
    now = [0.0]
    live = {7}
    ctl = Controller(cluster.control, lambda lease: lease in live, lambda: 8, 5.0, lambda: now[0])
    assert ctl.scan() == []
    with pytest.raises(Crash):  # the driver (lease 7) dies after the base copy
        cluster.mover(hook=_crash_at("catchup"), driver=("n3", 7)).move("a", "n2")
    assert ctl.scan() == []  # first sight: its clock starts
    now[0] = 4.0
    assert ctl.scan() == []  # not stalled long enough
    now[0] = 6.0
    assert ctl.scan() == []  # stalled, but its driver's lease lives (a long copy)
    live.clear()
    assert ctl.scan() == ["a"]
    assert ctl.scan(busy={"a"}) == []  # being recovered
    src = cluster.dbs["n1"]
    src.upsert("c", [80000], _vecs(1, 80000), tenant="a")  # acknowledged while stranded
    report = cluster.mover(driver=("n1", 8)).resume("a")
    assert report.phase == "done" and _placed(cluster) == ("n2", 2, "serving")
    got = cluster.dbs["n2"].get("c", [80000], tenant="a")
    assert got.vectors.tobytes() == _vecs(1, 80000).tobytes()
    assert ctl.scan() == [] and cluster.control.moves() == {}


@pytest.mark.timeout(60)
def test_the_controller_retries_its_own_failed_recovery(cluster: Cluster) -> None:
    now = [0.0]
    ctl = Controller(cluster.control, lambda lease: True, lambda: 8, 5.0, lambda: now[0])
    with pytest.raises(Crash):  # its own recovery thread ended at "activate" (after the flip)
        cluster.mover(hook=_crash_at("activate"), driver=("n1", 8)).move("a", "n2")
    assert ctl.scan() == []
    now[0] = 10.0
    assert ctl.scan(busy={"a"}) == [] and ctl.scan() == ["a"]  # alive lease, but its own
    ctl.retry_later("a")  # its recovery failed: another stall_s first
    assert ctl.scan() == []
    now[0] = 16.0
    assert ctl.scan() == ["a"]
    ctl.forget()  # a lost role: the clocks start again
    assert ctl.scan() == []
    assert cluster.mover(driver=("n1", 8)).resume("a").phase == "done"
    np.testing.assert_array_equal(
        cluster.dbs["n2"].get("c", [0], tenant="a").ids, np.array([0], np.uint64)
    )


@pytest.mark.timeout(60)
def test_a_stranded_move_that_cannot_resume_aborts_before_the_flip(cluster: Cluster) -> None:
    with pytest.raises(Crash):  # the driver dies before the target imported anything
        cluster.mover(hook=_crash_at("copy"), driver=("n3", 7)).move("a", "n2")
    cluster.dbs["n2"].create_tenant("a", tenant_id=99)  # meanwhile: a conflicting global id
    with pytest.raises(FailedPrecondition, match="global id"):
        cluster.mover(driver=("n1", 8)).resume("a")  # the controller's attempt
    assert cluster.control.move("a") is None  # aborted: it had claimed the move first
    assert _placed(cluster) == ("n1", 1, "serving")
    cluster.dbs["n1"].upsert("c", [1], _vecs(1, 1), tenant="a")  # serving at the source


class _Down:
    """A node's NodeOps while the node is down (kill -9): every call Unavailable."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            raise Unavailable(f"node call {name}: the node is down")

        return call


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("down", "phase"), [("n2", "catchup"), ("n1", "flip")])
def test_a_driver_that_cannot_finish_hands_the_move_to_the_controller(
    cluster: Cluster, down: str, phase: str
) -> None:
    """A driver that lives on (a node whose MoveTenant call failed) with a node of the move
    down, and whose abort fails too, leaves the record without its lease: the controller
    finishes it once the node is back. (It used to keep its live lease on the record: no one
    ever resumed the move, and one killed at the flip left the tenant frozen for good.)"""
    now = [0.0]
    ctl = Controller(cluster.control, lambda lease: lease == 9, lambda: 8, 5.0, lambda: now[0])
    ops: dict[str, Any] = cluster.ops()

    def kill(at: str) -> None:
        if at == phase:
            ops[down] = _Down()

    mover = Mover(cluster.control, ops, cluster.store, hook=kill, driver=("n3", 9))
    with pytest.raises(Unavailable):
        mover.move("a", "n2")
    rec = cluster.control.move("a")
    assert rec is not None and rec.phase == phase and rec.driver_lease == 0
    assert ctl.scan() == []
    now[0] = 6.0
    assert ctl.scan() == ["a"]  # the driver's lease lives, but the move is not its own now
    # the node is back: after the CAS of the flip the move goes forward; before it, the abort
    # that served the source again but never reached the target is finished
    report = cluster.mover(driver=("n1", 8)).resume("a")
    home, epoch = ("n2", 2) if phase == "flip" else ("n1", 1)
    assert report.phase == ("done" if phase == "flip" else "aborted")
    assert cluster.control.moves() == {} and _placed(cluster) == (home, epoch, "serving")
    assert list(cluster.store.keys()) == []  # no bundle left behind
    if phase != "flip":
        assert cluster.dbs["n2"].count("c", tenant="a") == 0  # the partial copy is dropped
    cluster.dbs[home].upsert("c", [1], _vecs(1, 1), tenant="a")  # writable at its home
    got = cluster.dbs[home].get("c", [1, BASE - 1], tenant="a")
    assert got.vectors[1].tobytes() == _vecs(BASE, 0)[-1].tobytes()  # the copy, whole
