"""One log line per start-up stage with its duration (open LMDB, load collections, ...)."""

from __future__ import annotations

import logging
import time

__all__ = ["StartupLog"]


class StartupLog:
    """`s = StartupLog(log)`, then `s.done("open LMDB")` at the end of each stage: logs
    "start-up: open LMDB in 0.01 s" (seconds since the previous stage, or since creation)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last = time.perf_counter()

    def done(self, stage: str, detail: str = "") -> float:
        """Log the stage that just ended; returns its duration in seconds."""
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        self._log.info("start-up: %s in %.2f s%s", stage, dt, f" ({detail})" if detail else "")
        return dt
