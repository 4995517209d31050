"""The live move of one tenant between two nodes (scale-out.md §5.7), as a state machine.

Phases, each recorded in the control plane's move record (cas_move) before the next starts:

  prepare   placement {S, e, serving} -> {S, e, moving}
  copy      S exports a base bundle (which pins S's log), T imports it; S keeps serving
  catchup   deltas after the last applied sequence until one is small (or max_rounds)
  handoff   placement -> handoff; S freezes the tenant (writes refused, never acknowledged)
            and returns fence_seq; the final delta (covering fence_seq) is applied at T
  flip      placement -> {T, e+1, activating}; S persists a moved tombstone (TENANT_MOVED)
  activate  placement -> serving at T
  cleanup   after `grace_s`, S drops what the tenant owns; the bundles are deleted
  done      the record is deleted

Every step is idempotent, so `resume(tenant)` continues from the recorded phase after a
crash of the mover or a node. A resume at handoff or flip (before the placement flipped)
freezes again and ships a new final delta: a source restarted meanwhile lost its in-memory
freeze. A cluster node restarted with a tenant's placement on it in handoff starts with the
tenant frozen (server/cluster.py), so a driver that goes on without resuming (its fence still
true) flips no write the source acknowledged after it. `abort` is allowed until the
placement flipped (serving again at S, S unfrozen, T's partial copy dropped); after the flip
the move only rolls forward. A CuratorError before the flip aborts the move by default.

Writes of the tenant are paused from the freeze to the activation: the final delta and two
compare-and-swaps. The target's headroom is checked once the base bundle's size is known,
before the target imports anything (FailedPrecondition naming the numbers, then the move
aborts). The record names its driver and the driver's lease: a controller resumes a move
whose driver's lease is gone (curator.cluster.controller); a driver that finds the record
claimed by another stops without touching the move.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

from curator.cluster import headroom
from curator.cluster.contracts import BundleStore, ControlPlane, MoveRecord, NodeOps, Placement
from curator.errors import CuratorError, FailedPrecondition, InvalidArgument, NotFound
from curator.storage import bundle_codec

__all__ = ["LostMove", "MoveReport", "Mover"]

log = logging.getLogger(__name__)

_BEFORE_FLIP = ("prepare", "copy", "catchup", "handoff", "flip")


class LostMove(FailedPrecondition):
    """Another driver took the move over (its record changed under this one): stop, touch
    nothing."""


@dataclasses.dataclass
class MoveReport:
    tenant: str
    source: str
    target: str
    phase: str = "prepare"  # the last phase reached ("done" / "aborted" at the end)
    epoch: int = 0  # the placement epoch at the target
    base_seq: int = 0
    fence_seq: int = 0
    rounds: int = 0  # catch-up deltas applied
    bytes: int = 0  # bundle bytes shipped (base copy and deltas)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # per phase
    pause_s: float = 0.0  # freeze to activation (in this process; 0 if not seen whole)
    _frozen_at: float = 0.0
    _final: dict[str, object] = dataclasses.field(default_factory=dict)  # last delta's header


class Mover:
    """Drives moves over a control plane, the nodes' NodeOps (by node id) and a bundle store.
    `hook(phase)` runs at every phase boundary (tests inject crashes there)."""

    def __init__(
        self,
        control: ControlPlane,
        nodes: Mapping[str, NodeOps],
        store: BundleStore,
        *,
        small_delta: int = 32,
        max_rounds: int = 8,
        grace_s: float = 0.0,
        abort_on_error: bool = True,
        hook: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        driver: tuple[str, int] = ("", 0),
    ) -> None:
        self.control = control
        self.nodes = nodes
        self.store = store
        self.small_delta = small_delta  # source sequences per delta counted as small
        self.max_rounds = max_rounds
        self.grace_s = grace_s
        self.abort_on_error = abort_on_error
        self.hook = hook or (lambda phase: None)
        self.clock = clock
        self.driver = driver  # (node id or "", lease id) recorded in the move record

    # -- entry points -------------------------------------------------------------------------
    def move(self, tenant: str, target: str) -> MoveReport:
        p = self.control.placement(tenant)
        if p is None:
            raise NotFound(f"expected a placed tenant, got {tenant!r}")
        if target not in self.nodes or p.node not in self.nodes:
            raise InvalidArgument(f"expected known nodes, got {p.node!r} -> {target!r}")
        if p.node == target or p.state != "serving":
            raise FailedPrecondition(
                f"expected {tenant!r} serving on another node than {target!r}, got {p.state} "
                f"on {p.node!r}"
            )
        name, lease = self.driver
        new = MoveRecord(tenant, p.node, target, "prepare", driver=name, driver_lease=lease)
        rec = self.control.cas_move(None, new)
        if rec is None:
            raise FailedPrecondition(f"expected no move of {tenant!r} in progress (resume it)")
        return self._run(rec)

    def resume(self, tenant: str) -> MoveReport:
        rec = self.control.move(tenant)
        if rec is None:
            raise NotFound(f"expected a move of {tenant!r} in progress, got none")
        name, lease = self.driver
        if (rec.driver, rec.driver_lease) != (name, lease):  # claim it: a stale driver stops
            rec = self._step(rec, driver=name, driver_lease=lease)
        p = self._placement(tenant)
        if rec.phase in _BEFORE_FLIP[1:] and (p.node, p.state) == (rec.source, "serving"):
            # An abort got as far as serving the tenant at the source again (then a node of
            # the move was down): finish that abort. Running the phases again would copy the
            # tenant anew, under a key of the wrong epoch that nothing deletes.
            return self.abort(tenant)
        return self._run(rec)

    def abort(self, tenant: str) -> MoveReport:
        """Undo a move that has not flipped: serving at the source again, unfrozen."""
        rec = self.control.move(tenant)
        if rec is None:
            raise NotFound(f"expected a move of {tenant!r} in progress, got none")
        report = MoveReport(tenant, rec.source, rec.target)
        p = self._placement(tenant)
        if rec.phase not in _BEFORE_FLIP or p.node != rec.source:
            raise FailedPrecondition(
                f"expected a move of {tenant!r} before its flip, got phase {rec.phase} with "
                f"the tenant on {p.node!r}: it can only roll forward (resume it)"
            )
        if (
            p.state != "serving"
            and self.control.cas_placement(p, _with(p, state="serving")) is None
        ):
            raise FailedPrecondition(f"expected the placement of {tenant!r} unchanged meanwhile")
        self.nodes[rec.source].unfreeze_tenant(tenant)
        self.nodes[rec.target].drop_moved(tenant)  # its partial copy
        self._delete_bundles(p)
        self._step(rec, phase="aborted")
        self.control.cas_move(self.control.move(tenant), None)
        report.phase = "aborted"
        log.warning("move of %r from %s to %s aborted", tenant, rec.source, rec.target)
        return report

    # -- the machine --------------------------------------------------------------------------
    def _run(self, rec: MoveRecord) -> MoveReport:
        report = MoveReport(rec.tenant, rec.source, rec.target, rec.phase)
        try:
            while rec.phase not in ("done", "aborted"):
                self.hook(rec.phase)
                t0 = self.clock()
                phase = rec.phase
                rec = getattr(self, "_" + phase)(rec, report)
                report.seconds[phase] = report.seconds.get(phase, 0.0) + self.clock() - t0
                report.phase = rec.phase
        except LostMove:
            raise  # the move is another driver's now
        except CuratorError:
            now = self.control.move(rec.tenant)
            mine = now is not None and (now.driver, now.driver_lease) == self.driver
            if self.abort_on_error and mine and now is not None and now.phase in _BEFORE_FLIP:
                try:
                    self.abort(rec.tenant)
                except CuratorError:  # it flipped meanwhile, or a node is down: resume later
                    log.exception("abort of the move of %r failed", rec.tenant)
            self._release(rec.tenant)
            raise
        return report

    def _release(self, tenant: str) -> None:
        """Give up a move this driver cannot finish (a node of it is down, etcd is away):
        its record keeps the phase but names no driver's lease, so the controller resumes
        it once it has not changed for a lease TTL. Without this, a driver that lives on
        (a node whose MoveTenant call failed) would hold the move with its live lease and
        no one would ever finish it: the tenant stuck frozen, or moving, for good."""
        try:
            now = self.control.move(tenant)
            if now is not None and (now.driver, now.driver_lease) == self.driver:
                self.control.cas_move(now, dataclasses.replace(now, driver_lease=0))
                log.warning("move of %r left at %s for the controller", tenant, now.phase)
        except CuratorError:  # etcd away: the record keeps this driver's lease
            log.exception("could not hand the move of %r to the controller", tenant)

    def _advance(self, rec: MoveRecord, before: str, after: str) -> None:
        """The tenant's placement on the source from `before` to `after` (idempotent: already
        `after` is fine, a resumed phase)."""
        p = self._placement(rec.tenant)
        if p.node != rec.source:
            raise FailedPrecondition(f"expected {rec.tenant!r} on {rec.source!r}, got {p.node!r}")
        if p.state == before:
            self._cas(p, state=after)
        elif p.state != after:
            raise FailedPrecondition(f"expected {rec.tenant!r} {before}, got {p.state}")

    def _prepare(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        self._advance(rec, "serving", "moving")
        return self._step(rec, phase="copy")

    def _copy(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        p = self._placement(rec.tenant)
        key = self._key(p, "base")
        upto = self.nodes[rec.source].export_tenant(rec.tenant, 0, self.store, key)
        size = self.store.size(key)
        headroom.check_fits(rec.tenant, rec.target, size, self.nodes[rec.target].headroom())
        self.nodes[rec.target].import_tenant(rec.tenant, self.store, key)
        report.base_seq = upto
        report.bytes += size
        return self._step(rec, phase="catchup", bundle=key, base_seq=upto, caught_up_seq=upto)

    def _catchup(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        for _ in range(self.max_rounds):
            since = rec.caught_up_seq
            upto = self._delta(rec, report, since)
            rec = self._step(rec, caught_up_seq=upto)
            report.rounds += 1
            if upto - since <= self.small_delta:
                break
        return self._step(rec, phase="handoff")

    def _handoff(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        self._advance(rec, "moving", "handoff")
        report._frozen_at = self.clock()
        fence = self.nodes[rec.source].freeze_tenant(rec.tenant)
        # read after the freeze: covers the fence
        upto = self._delta(rec, report, rec.caught_up_seq, report._final)
        report.fence_seq = fence
        return self._step(rec, phase="flip", fence_seq=fence, caught_up_seq=upto)

    def _flip(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        p = self._placement(rec.tenant)
        if p.node == rec.source:
            if not report._frozen_at:  # resumed: the source may have restarted unfrozen
                rec = self._handoff(rec, report)
            p = self._placement(rec.tenant)
            if p.state != "handoff":  # aborted meanwhile (the source serves again): no flip
                raise FailedPrecondition(
                    f"expected {rec.tenant!r} in handoff on {rec.source!r}, got {p.state}"
                )
            self._readsets(rec, report._final)  # before the flip: stale ones cost nothing
            self.nodes[rec.target].freeze_tenant(rec.tenant)  # no ack before activation
            # a CAS on the record just read: it loses if an abort changed it since
            p = self._cas(p, node=rec.target, epoch=p.epoch + 1, state="activating")
        elif p.node == rec.target:  # resumed after the flip: the target may have restarted
            self.nodes[rec.target].freeze_tenant(rec.tenant)
        else:
            raise FailedPrecondition(f"expected {rec.tenant!r} on {rec.source!r}, got {p.node!r}")
        self.nodes[rec.source].mark_moved(rec.tenant, rec.target, p.epoch)
        report.epoch = p.epoch
        return self._step(rec, phase="activate")

    def _activate(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        p = self._placement(rec.tenant)
        # The source redirects now (mark_moved): the target may acknowledge (I3).
        self.nodes[rec.target].unfreeze_tenant(rec.tenant)
        if p.state == "activating":
            p = self._cas(p, state="serving")
        report.epoch = p.epoch
        if report._frozen_at:
            report.pause_s = self.clock() - report._frozen_at
        return self._step(rec, phase="cleanup")

    def _cleanup(self, rec: MoveRecord, report: MoveReport) -> MoveRecord:
        if self.grace_s:
            time.sleep(self.grace_s)  # reads that started at the source finish first
        self.nodes[rec.source].drop_moved(rec.tenant)
        self._delete_bundles(self._placement(rec.tenant), epoch_delta=-1)
        rec = self._step(rec, phase="done")
        self.control.cas_move(rec, None)
        return rec

    # -- helpers ------------------------------------------------------------------------------
    def _delta(
        self,
        rec: MoveRecord,
        report: MoveReport,
        since: int,
        header: dict[str, object] | None = None,
    ) -> int:
        """Ship the delta after `since`; returns the sequence it reflects. `header`: filled
        with the bundle's header (who the tenant granted to and received from)."""
        key = self._key(self._placement(rec.tenant), f"delta-{since}")
        upto = self.nodes[rec.source].export_tenant(rec.tenant, since, self.store, key)
        self.nodes[rec.target].import_tenant(rec.tenant, self.store, key)
        report.bytes += self.store.size(key)
        if header is not None:
            header.clear()
            header.update(bundle_codec.header(self.store.get(key)))
        self.store.delete(key)
        return upto

    def _readsets(self, rec: MoveRecord, header: dict[str, object]) -> None:
        """§5.6: the tenant's grantees homed elsewhere read its vectors on the target now,
        and the tenant reads the grants it received on their owners' nodes."""
        others = header.get("tenants", {})
        for name in others.values() if isinstance(others, dict) else ():
            p = self.control.placement(name)
            if p is not None and p.node != rec.target:
                self.control.add_readset(name, rec.target)
        received = header.get("received_from", [])
        for owner in received if isinstance(received, list) else ():
            p = self.control.placement(owner)
            node = p.node if p is not None else rec.source
            if node != rec.target:
                self.control.add_readset(rec.tenant, node)

    def _placement(self, tenant: str) -> Placement:
        p = self.control.placement(tenant)
        if p is None:
            raise NotFound(f"expected a placed tenant, got {tenant!r}")
        return p

    def _cas(self, p: Placement, **change: object) -> Placement:
        stored = self.control.cas_placement(p, _with(p, **change))
        if stored is None:
            raise FailedPrecondition(f"expected the placement of {p.tenant!r} unchanged meanwhile")
        return stored

    def _step(self, rec: MoveRecord, **change: object) -> MoveRecord:
        stored = self.control.cas_move(rec, dataclasses.replace(rec, **change))  # type: ignore[arg-type]
        if stored is None:
            raise LostMove(f"expected to own the move of {rec.tenant!r}, another mover does")
        return stored

    def _key(self, p: Placement, what: str) -> str:
        # The epoch names the move: the next move of the tenant runs at epoch + 1.
        epoch = p.epoch if p.state != "activating" and p.state != "serving" else p.epoch - 1
        return f"moves/{p.tenant_id}/e{epoch}/{what}"

    def _delete_bundles(self, p: Placement, epoch_delta: int = 0) -> None:
        epoch = p.epoch + epoch_delta
        for key in list(self.store.keys(f"moves/{p.tenant_id}/e{epoch}/")):
            self.store.delete(key)


def _with(p: Placement, **change: object) -> Placement:
    return dataclasses.replace(p, **change)  # type: ignore[arg-type]
