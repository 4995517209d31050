"""Downstream model load and the pressure it puts on cache policies (with hysteresis).

Load u of a model is a utilisation (1.0 = at capacity). It comes from the gateway
(`report(model, u)`), or, when the gateway has not reported recently and the model's capacity
is known (`set_capacity(model, rps)`), from the cache's own outcomes: the misses of the last
`window_s` seconds are the calls the model had to serve.

The smoothed load (EWMA) drives a two-state controller per model: it enters the overloaded
state at u >= enter and leaves it only at u <= exit (exit < enter), so a load hovering around
one value does not flip policies back and forth. While overloaded, the pressure is
clip((u - exit) / (enter - exit), 0, 1); otherwise 0. Policies turn pressure into a looser
threshold and a longer TTL (CategoryPolicy.effective_*).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable

from curator import results
from curator.errors import InvalidArgument

__all__ = ["LoadConfig", "LoadController", "ModelLoad"]


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    """enter / exit: utilisation thresholds of the overloaded state (exit < enter).
    smoothing: EWMA weight of a new report (1 = no smoothing).
    report_ttl_s: a gateway report counts for this long; after it, the measured load is used.
    window_s: the window of the measured load (misses per second / capacity)."""

    enter: float = 0.85
    exit: float = 0.6
    smoothing: float = 0.5
    report_ttl_s: float = 30.0
    window_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.exit < self.enter:
            raise InvalidArgument(
                f"expected 0 <= exit < enter, got exit={self.exit} enter={self.enter}"
            )
        if not 0 < self.smoothing <= 1:
            raise InvalidArgument(f"expected smoothing in (0, 1], got {self.smoothing}")
        if self.report_ttl_s <= 0 or self.window_s <= 0:
            raise InvalidArgument("expected report_ttl_s > 0 and window_s > 0")


@dataclasses.dataclass
class ModelLoad:
    """The controller's view of one model (what `stats` and the metrics show)."""

    load: float = 0.0
    overloaded: bool = False
    pressure: float = 0.0
    source: str = "none"  # "reported" | "measured" | "none"
    reported_at: float = -math.inf
    capacity_rps: float = 0.0

    def view(self) -> results.ModelLoad:
        """What the API shows of it."""
        return results.ModelLoad(
            self.load, self.overloaded, self.pressure, self.source, self.capacity_rps
        )


class LoadController:
    """Thread-safe; `clock` is injectable for tests."""

    def __init__(
        self, config: LoadConfig | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config or LoadConfig()
        self._clock = clock or time.monotonic
        self._models: dict[str, ModelLoad] = {}
        self._misses: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def report(self, model: str, load: float) -> ModelLoad:
        """The gateway's measurement of `model`'s utilisation (>= 0; 1 = at capacity)."""
        if not isinstance(load, int | float) or not 0 <= load < math.inf:
            raise InvalidArgument(f"expected load a finite number >= 0, got {load!r}")
        with self._lock:
            m = self._models.setdefault(model, ModelLoad())
            now = self._clock()
            fresh = now - m.reported_at <= self.config.report_ttl_s
            s = self.config.smoothing
            m.load = s * load + (1 - s) * m.load if fresh else float(load)
            m.reported_at, m.source = now, "reported"
            self._step(m)
            return dataclasses.replace(m)

    def set_capacity(self, model: str, rps: float) -> None:
        """Requests per second `model` serves at utilisation 1 (0 forgets it)."""
        if not isinstance(rps, int | float) or not 0 <= rps < math.inf:
            raise InvalidArgument(f"expected capacity_rps a finite number >= 0, got {rps!r}")
        with self._lock:
            self._models.setdefault(model, ModelLoad()).capacity_rps = float(rps)

    def record_miss(self, model: str) -> None:
        """A lookup missed: the model is about to serve one more call."""
        with self._lock:
            m = self._models.get(model)
            if m is None or m.capacity_rps <= 0:
                return  # nothing to measure against
            q = self._misses.setdefault(model, collections.deque())
            now = self._clock()
            q.append(now)
            while q[0] < now - self.config.window_s:
                q.popleft()

    def pressure(self, model: str) -> float:
        """Current pressure of `model` in [0, 1] (0 for a model never reported or measured)."""
        with self._lock:
            m = self._models.get(model)
            if m is None:
                return 0.0
            self._refresh(model, m)
            return m.pressure

    def state(self) -> dict[str, ModelLoad]:
        with self._lock:
            for name, m in self._models.items():
                self._refresh(name, m)
            return {name: dataclasses.replace(m) for name, m in self._models.items()}

    # -- internals (lock held) ------------------------------------------------------------
    def _refresh(self, model: str, m: ModelLoad) -> None:
        now = self._clock()
        if now - m.reported_at <= self.config.report_ttl_s:
            return  # a fresh report rules
        if m.capacity_rps <= 0:
            if m.source == "reported":  # a stale report decays to "unknown": no pressure
                m.load, m.source = 0.0, "none"
                self._step(m)
            return
        q = self._misses.get(model, collections.deque())
        while q and q[0] < now - self.config.window_s:
            q.popleft()
        m.load = len(q) / self.config.window_s / m.capacity_rps
        m.source = "measured"
        self._step(m)

    def _step(self, m: ModelLoad) -> None:
        c = self.config
        if m.overloaded and m.load <= c.exit:
            m.overloaded = False
        elif not m.overloaded and m.load >= c.enter:
            m.overloaded = True
        m.pressure = (
            min(1.0, max(0.0, (m.load - c.exit) / (c.enter - c.exit))) if m.overloaded else 0.0
        )
