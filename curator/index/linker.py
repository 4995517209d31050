"""The background graph linker: one daemon thread per process links pending graph slots.

Inserts only append to a graph's fresh set (scanned exactly by searches, so results stay
exact over what is readable); a graph with `link_min` or more pending slots is scheduled
here and linked in steps of `graph.LINK_STEP` slots, each step's candidate search running
outside the graph's mutation lock (see `ProximityGraph.link_step`; a first build takes
larger steps). Each step takes a background slot (`cpu_budget`), so a training goes first.
Graphs are held weakly: a dropped index is never kept alive by the queue.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from curator.index.cpu_budget import background_slot

if TYPE_CHECKING:
    from curator.index.graph import ProximityGraph

__all__ = ["paused", "schedule", "wait_idle"]

log = logging.getLogger(__name__)

#: Consecutive empty steps (raced a delete or re-layout) after which a graph is linked under
#: its lock in one go, so a stream of deletes cannot starve it.
_MAX_RETRIES = 8
#: Slots then linked under the lock (bounded: a first build may have many pending).
_FORCED = 1024

_cond = threading.Condition()
_queue: dict[int, weakref.ref[ProximityGraph]] = {}


class _State:
    busy = False  # a graph is being linked
    paused = 0  # `paused()` depth
    thread: threading.Thread | None = None


_state = _State()


def schedule(graph: ProximityGraph) -> None:
    """Ask for `graph`'s pending slots to be linked soon (idempotent, never blocks)."""
    with _cond:
        _queue[id(graph)] = weakref.ref(graph)
        if _state.thread is None or not _state.thread.is_alive():
            _state.thread = threading.Thread(target=_run, name="curator-graph-linker", daemon=True)
            _state.thread.start()
        _cond.notify_all()


def wait_idle(timeout: float = 60.0) -> bool:
    """Block until nothing is queued or being linked (tests, bulk loads); False on timeout."""
    with _cond:
        return _cond.wait_for(lambda: not _queue and not _state.busy, timeout)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No link step starts while inside (tests: observe searches over pending slots)."""
    with _cond:
        _state.paused += 1
        _cond.wait_for(lambda: not _state.busy)
    try:
        yield
    finally:
        with _cond:
            _state.paused -= 1
            _cond.notify_all()


def _run() -> None:
    while True:
        with _cond:
            _cond.wait_for(lambda: _queue and not _state.paused)
            key, ref = next(iter(_queue.items()))
            del _queue[key]
            _state.busy = True
        try:
            graph = ref()
            if graph is not None:
                _drain(graph)
        except Exception:  # the worker must survive; the slots stay fresh (exact, correct)
            log.exception("graph linking failed; pending slots stay scanned exactly")
        finally:
            with _cond:
                _state.busy = False
                _cond.notify_all()


def _drain(graph: ProximityGraph) -> None:
    retries = 0
    while graph.pending:
        with _cond:
            if _state.paused:
                _queue[id(graph)] = weakref.ref(graph)  # resume later
                return
        with background_slot():  # per step: a training waiting for the core goes first
            linked = graph.link_step()
        if linked:
            retries = 0
            continue
        retries += 1
        if retries >= _MAX_RETRIES:
            store = graph._store
            if store is not None:
                graph.link_pending(store, _FORCED)
            retries = 0
        elif not graph.pending:
            return
