"""Training of a collection's shared tree off the write path.

When a collection crosses `train_min_vectors` (or grows by `retrain_growth`), the trainer
builds a new index beside the live one and swaps it in:
  1. under the collection's read lock (searches go on; writers wait for the copy only), copy
     the index state as snapshot arrays and note the write sequence they reflect;
  2. with no lock held, load the copy and train it (hierarchical k-means, re-layout of the
     vectors, re-encoding of every tenant): the long part;
  3. with no lock held, replay the writes logged since the copy into the new index (those
     made during training);
  4. under the database's writer lock and the collection's write lock, replay the few made
     during step 3 and the catalog's drops, then swap it in.
Writes and searches continue meanwhile against the old index (new vectors are routed by the
old tree, then re-homed by the replay). It costs a second copy of the index while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import faiss
import numba
import numpy as np

from curator.index.cpu_budget import background_slot
from curator.index.curator_index import CuratorIndex
from curator.storage.collection import Collection
from curator.storage.store import Store

__all__ = ["Trainer"]

log = logging.getLogger(__name__)


class Trainer:
    def __init__(
        self,
        store: Store,
        collections: dict[str, Collection],
        write_lock: threading.RLock,
        tenants: Callable[[], set[int]],
        threads: int = 0,
    ) -> None:
        """threads: what a training may use (0: one fewer than the cores, at least one)."""
        self.store = store
        self.threads = threads or max(1, (os.cpu_count() or 1) - 1)
        self.collections = collections  # shared with the database, read only here
        self.write_lock = write_lock
        self.tenants = tenants
        self._lock = threading.Lock()  # one training at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="curator-trainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def notify(self) -> None:
        """A write happened: check (in the background) whether a collection needs training."""
        self._wake.set()

    def train(self, c: Collection, force: bool = True) -> bool:
        """Train `c` now (in the calling thread) without blocking its searches; returns False
        if there was nothing to do or the collection was dropped meanwhile."""
        with self._lock:
            with c.lock.read_lock():
                if not force and not c.index.wants_training():
                    return False
                if len(c.index) < 2:
                    return False
                arrays = {k: np.array(v, copy=True) for k, v in c.index.snapshot().items()}
                seq = c.applied_seq
                c.log_pin = seq  # the snapshotter keeps the log after it
            try:
                return self._train_copy(c, arrays, seq)
            finally:
                c.log_pin = None

    def _train_copy(self, c: Collection, arrays: dict[str, np.ndarray], seq: int) -> bool:
        t0 = time.perf_counter()
        fresh = CuratorIndex.from_snapshot(arrays)
        del arrays
        fresh.auto_train = False
        with background_slot(urgent=True), _threads(self.threads):  # no lock held meanwhile
            fresh.train()
        took = time.perf_counter() - t0
        # Catch up on the writes made while training with no lock held (writes go on), so
        # that the swap under the locks replays only those made during this catch-up.
        staged = Collection(c.info, fresh, seq)
        staged._replay(self.store, None)
        with self.write_lock:
            if self.collections.get(c.info.name) is not c:
                return False
            with c.lock.write_lock():
                staged._replay(self.store, self.tenants())
                c.index = staged.index
                c.quarantined += staged.quarantined
                c.note_write(c.applied_seq)  # the new layout wants a snapshot
        self.runs += 1
        log.info(
            "collection %r: trained %d vectors off the write path in %.1f s, swapped in",
            c.info.name,
            len(fresh),
            took,
        )
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            for c in list(self.collections.values()):
                if self._stop.is_set():
                    return
                try:
                    self.train(c, force=False)
                except Exception:  # keep the loop alive; the next write retries
                    log.exception("background training of %r failed", c.info.name)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Cap faiss's (OpenMP) and numba's thread pools at `n` in the calling thread only (both
    settings are per thread), so that training leaves cores to the searches."""
    old_omp, old_numba = faiss.omp_get_max_threads(), numba.get_num_threads()
    faiss.omp_set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old_omp)
        numba.set_num_threads(old_numba)
