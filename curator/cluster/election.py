"""Election of the cluster's one controller through etcd: a lease-bound key taken by
compare-and-swap.

A node campaigns by creating ``/curator/v1/controller`` = {node} under a lease of its own, in
a transaction that succeeds only if the key is absent. The holder renews the lease every
third of its TTL and counts itself leader only until the TTL after the last renewal it sent
(so it steps down before etcd could hand the key to another node, even when etcd is
unreachable). Others wait and try again; when the holder dies its lease expires, the key goes
with it, and the next campaign wins. A graceful close revokes the lease at once.

>>> e = Election(control, "n1"); e.start()         # doctest: +SKIP
>>> e.is_leader(), e.leader()                       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from curator.cluster.etcd_control import ROOT, EtcdControl

__all__ = ["KEY", "Election"]

log = logging.getLogger(__name__)

KEY = "controller"


class Election:
    """Campaigns for the controller role on `control`'s etcd for node `node_id`, with a
    lease of `control.lease_ttl` seconds."""

    def __init__(self, control: EtcdControl, node_id: str) -> None:
        self.control = control
        self.node_id = node_id
        self.ttl = control.lease_ttl
        self._until = 0.0  # monotonic time the role lasts to (0: not the leader)
        self._quiet_until = 0.0  # after a resignation: no campaign for one TTL
        self._lease: Any = None

    def start(self) -> None:
        self.control.spawn(self._campaign)

    def is_leader(self) -> bool:
        return time.monotonic() < self._until

    def leader(self) -> str:
        """The node holding the role, as this node's cache last saw it ("" if none)."""
        hit = self.control.raw(KEY)
        return str(hit.get("node", "")) if isinstance(hit, dict) else ""

    def resign(self) -> None:
        """Give the role up now (its lease revoked) and stay out of the next campaign for
        one TTL: another node takes it at once."""
        self._until = 0.0
        self._quiet_until = time.monotonic() + self.ttl
        lease = self._lease
        if lease is not None:
            self.control.run(lease.revoke())

    async def _campaign(self) -> None:
        client = self.control.client
        tx = client.transactions
        key = (ROOT + KEY).encode()
        value = json.dumps({"node": self.node_id}).encode()
        while True:
            try:
                if time.monotonic() < self._quiet_until:
                    await asyncio.sleep(0.2)
                    continue
                sent = time.monotonic()  # before the grant: the TTL runs from there
                lease = await client.lease(self.ttl)
                won, _ = await client.transaction(
                    compare=[tx.version(key) == 0],
                    success=[tx.put(key, value, lease=lease)],
                    failure=[],
                )
                if not won:
                    await lease.revoke()
                    await asyncio.sleep(min(1.0, self.ttl / 3))
                    continue
                self._lease, self._until = lease, sent + self.ttl
                log.info("node %s is the cluster controller", self.node_id)
                while True:
                    await asyncio.sleep(self.ttl / 3)
                    sent = time.monotonic()
                    reply = await lease.refresh()
                    if time.monotonic() < self._quiet_until:
                        break  # resigned meanwhile
                    if reply is None or reply.TTL <= 0:
                        break  # expired while etcd was away: campaign again
                    self._until = sent + self.ttl
                log.warning("node %s lost the controller role (its lease expired)", self.node_id)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # etcd away: the role lapses with the lease's TTL
                log.warning("controller campaign of %s failed (%s)", self.node_id, e)
                await asyncio.sleep(0.5)
            finally:
                self._lease = None
