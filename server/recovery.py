"""The controller on a cluster node: it campaigns for the role (curator.cluster.election)
and, while it holds it, resumes moves whose driver died (curator.cluster.controller), each in
a thread of its own, with the cluster's admin key for the calls to other nodes.

Without a configured admin key (each node generated its own) the node still campaigns, but
cannot act on other nodes: it logs that stranded moves need `curator cluster move --resume`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from curator.cluster.controller import Controller
from curator.cluster.election import Election
from curator.database import Database
from curator.errors import CuratorError, Unavailable
from server import moves

if TYPE_CHECKING:
    from server.cluster import ClusterNode

__all__ = ["Recovery"]

log = logging.getLogger(__name__)


class Recovery:
    """`period`: seconds between scans; a move is stranded after the lease TTL without
    progress (see Controller)."""

    def __init__(self, c: ClusterNode, db: Database, period: float = 1.0) -> None:
        self.c, self.db, self.period = c, db, period
        ctl = c.control
        self.election = Election(ctl, c.node_id)
        self.controller = Controller(
            ctl, ctl.lease_alive, lambda: ctl.lease_id, stall_s=float(ctl.lease_ttl)
        )
        self._md = (("authorization", f"Bearer {c.admin_key}"),) if c.admin_key else ()
        self._busy: set[str] = set()  # tenants whose moves a recovery thread resumes
        self._driving: Counter[str] = Counter()  # ... that MoveTenant calls here drive
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="controller")
        self._warned = False

    def start(self) -> None:
        self.election.start()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        try:
            self.election.resign()
        except CuratorError:  # etcd away: the role lapses with its lease
            pass

    @contextlib.contextmanager
    def driving(self, tenant: str) -> Iterator[None]:
        """A move of `tenant` this node drives for a call: while it runs it is never
        stranded, however long a phase takes without a change of its record (a big
        tenant's copy outlasts a lease TTL; the controller would otherwise drive the same
        move a second time beside it)."""
        with self._lock:
            self._driving[tenant] += 1
        try:
            yield
        finally:
            with self._lock:
                self._driving[tenant] -= 1
                if not self._driving[tenant]:
                    del self._driving[tenant]
                self.controller.retry_later(tenant)  # its clock starts when the call ends

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            if not self.election.is_leader():
                self.controller.forget()
                continue
            try:
                with self._lock:
                    stranded = self.controller.scan(self._busy | set(self._driving))
            except Unavailable:
                continue  # etcd away: no lease can be checked; the next scan tries again
            except Exception:
                log.exception("the controller's scan failed")
                continue
            for tenant in stranded:
                if not self._md:
                    if not self._warned:
                        log.warning(
                            "stranded move of %r: this node has no configured admin key to "
                            "resume it with (curator cluster move %s --resume)",
                            tenant,
                            tenant,
                        )
                        self._warned = True
                    continue
                with self._lock:
                    self._busy.add(tenant)
                threading.Thread(
                    target=self._recover, args=(tenant,), daemon=True, name="recover"
                ).start()

    def _recover(self, tenant: str) -> None:
        try:
            log.warning("controller %s: resuming the stranded move of %r", self.c.node_id, tenant)
            phase = moves.recover(self.c, self.db, tenant, self._md)
            log.warning("controller %s: the move of %r ended %s", self.c.node_id, tenant, phase)
        except CuratorError as e:
            log.warning("controller: the move of %r is not recovered yet: %s", tenant, e)
        except Exception:
            log.exception("controller: recovering the move of %r failed", tenant)
        finally:
            with self._lock:  # the scan reads both
                self.controller.retry_later(tenant)
                self._busy.discard(tenant)
