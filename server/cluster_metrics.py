"""Prometheus metrics of cluster mode, in the server's registry (server.metrics.REGISTRY):
moves by outcome, per-phase seconds, bundle bytes and vectors copied, the write pause (fence
to activation), forwarded calls by outcome, placements per node and the controller role.

Counted on the node that drove the move (or that forwarded the call). The page names nodes,
never tenants.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from curator.cluster.mover import MoveReport
from server.metrics import REGISTRY

__all__ = ["FORWARDED", "MOVES", "observe_move", "watch_cluster"]

MOVES = Counter(
    "curator_moves",
    "Tenant moves this node drove to an end, by outcome (done, aborted, failed) and by how "
    "they started (call: MoveTenant; recovered: the controller resumed a stranded move)",
    ["outcome", "how"],
    registry=REGISTRY,
)
PHASE_SECONDS = Histogram(
    "curator_move_phase_seconds",
    "Seconds spent in each move phase",
    ["phase"],
    registry=REGISTRY,
    buckets=(1e-3, 1e-2, 0.05, 0.1, 0.3, 1, 3, 10, 30, 100, 300),
)
PAUSE_SECONDS = Histogram(
    "curator_move_pause_seconds",
    "A moved tenant's write pause: its freeze at the source to its activation at the target",
    registry=REGISTRY,
    buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30),
)
BYTES = Counter(
    "curator_move_bytes", "Bundle bytes shipped by moves (base copies and deltas)",
    registry=REGISTRY,
)  # fmt: skip
VECTORS = Counter(
    "curator_move_vectors", "Vectors written at move targets (base copies and deltas)",
    registry=REGISTRY,
)  # fmt: skip
FORWARDED = Counter(
    "curator_forwarded_requests",
    "Calls this node forwarded to a tenant's home, by method and outcome (a status code)",
    ["method", "outcome"],
    registry=REGISTRY,
)


def observe_move(report: MoveReport | None, outcome: str, how: str, vectors: int = 0) -> None:
    """Count one move that ended here (`report` None: it failed before reporting)."""
    MOVES.labels(outcome, how).inc()
    if report is None:
        return
    for phase, s in report.seconds.items():
        PHASE_SECONDS.labels(phase).observe(s)
    if report.pause_s:
        PAUSE_SECONDS.observe(report.pause_s)
    BYTES.inc(report.bytes)
    VECTORS.inc(vectors)


class _ClusterState:
    """Placements per node and the controller role, read at scrape time from the newest
    node of this process (tests run several servers in one process)."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[dict[str, int], bool]] | None = None

    def collect(self) -> Any:
        places = GaugeMetricFamily(
            "curator_placements", "Tenants homed on each node (placement map)", labels=["node"]
        )
        role = GaugeMetricFamily(
            "curator_controller", "1 if this node holds the cluster controller role"
        )
        if self.source is not None:
            per_node, leader = self.source()
            for node, n in sorted(per_node.items()):
                places.add_metric([node], n)
            role.add_metric([], 1.0 if leader else 0.0)
        yield places
        yield role


_STATE = _ClusterState()
_registered = threading.Lock()
_done = False


def watch_cluster(source: Callable[[], tuple[dict[str, int], bool]]) -> None:
    """Publish `source()` = ({node: tenants homed there}, this node is the controller)."""
    global _done
    with _registered:
        if not _done:
            REGISTRY.register(_STATE)
            _done = True
        _STATE.source = source
