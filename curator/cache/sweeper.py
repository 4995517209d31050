"""The cache's background work: a thread that periodically removes expired entries and writes
hit counts back to LMDB (they guide eviction; losing the last few on a crash is harmless)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from curator.cache import entry as entry_codec
from curator.cache.ledger import Ledger
from curator.cache.recovery import ID
from curator.storage.store import Store

__all__ = ["Sweeper", "write_back_hits"]

log = logging.getLogger(__name__)


class Sweeper:
    """Calls `sweep()` every `every_s` seconds on a daemon thread until `stop()`."""

    def __init__(self, sweep: Callable[[], Any], every_s: float) -> None:
        self._sweep = sweep
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curator-cache-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._sweep()
            except Exception:  # keep sweeping; the next round retries
                log.exception("cache sweep failed")


def write_back_hits(store: Store, ledger: Ledger) -> int:
    """Write the hit counts changed since the last call into the entries' records; returns
    how many. Entries deleted meanwhile are skipped; on a failed write the ids go back to the
    ledger's dirty set."""
    dirty = ledger.take_dirty()
    if not dirty:
        return 0

    def txn_fn(txn: Any) -> None:
        for i, hits, last_hit in dirty:
            raw = store.get_raw(txn, "cache", ID.pack(i))
            if raw is not None:
                store.put_raw(txn, "cache", ID.pack(i), entry_codec.with_hits(raw, hits, last_hit))

    try:
        store.write(txn_fn)
    except Exception:
        ledger.restore_dirty([i for i, _, _ in dirty])
        raise
    return len(dirty)
