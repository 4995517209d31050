"""Prometheus metrics: requests, latencies and errors by method; collection sizes.

The page is unauthenticated (bound to 127.0.0.1), so it names no tenant and no category a
tenant made up: the cache series are labelled with the built-in categories only, every other
category is summed into "other".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from curator.cache.policy import CATALOGUE
from curator.results import CacheStats

__all__ = ["REGISTRY", "CacheState", "MetricsInterceptor", "serve_metrics"]

#: RPC metrics, one set per process (several servers in one process share them).
REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "curator_requests", "RPCs by method and status code", ["method", "code"], registry=REGISTRY
)
LATENCY = Histogram(
    "curator_request_seconds",
    "RPC latency by method",
    ["method"],
    registry=REGISTRY,
    buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1, 3, 10),
)


class MetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self.requests = REQUESTS
        self.latency = LATENCY

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            t0 = time.perf_counter()
            code = "OK"
            try:
                return inner(request, context)
            except Exception:
                code = context.code().name if context.code() is not None else "UNKNOWN"
                raise
            finally:
                self.latency.labels(method).observe(time.perf_counter() - t0)
                self.requests.labels(method, code).inc()

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class CollectionSizes:
    """Collects vectors, tenants and quarantined rows per collection at scrape time."""

    def __init__(self, describe: Callable[[], dict[str, tuple[int, int, int]]]) -> None:
        self._describe = describe

    def collect(self) -> Any:
        vectors = GaugeMetricFamily(
            "curator_collection_vectors", "Vectors per collection", labels=["collection"]
        )
        tenants = GaugeMetricFamily(
            "curator_collection_tenants",
            "Tenants with vectors per collection",
            labels=["collection"],
        )
        quarantined = GaugeMetricFamily(
            "curator_collection_quarantined_rows",
            "Stored rows start-up could not apply (moved aside, logged at ERROR)",
            labels=["collection"],
        )
        for name, (n_vec, n_ten, n_bad) in self._describe().items():
            vectors.add_metric([name], n_vec)
            tenants.add_metric([name], n_ten)
            quarantined.add_metric([name], n_bad)
        yield vectors
        yield tenants
        yield quarantined


class CacheState:
    """Semantic-cache metrics at scrape time: lookups by category and outcome, entries and
    bytes by category, each model's load and pressure, the current (load-adjusted)
    database-wide threshold and TTL of every category for every model with a known load, and
    the learned state summed over tenants per category (never a series per tenant or entry).
    `state()` returns (cache stats of the whole database, {(category, model): (threshold,
    ttl_s)}, {category: calibration summary} (curator.cache.policy_state)), the last
    optional."""

    def __init__(self, state: Callable[[], tuple[Any, ...]]) -> None:
        self._state = state

    def collect(self) -> Any:
        stats, current, *rest = self._state()
        yield from self._basic(stats, current)
        yield from _learned(_public_learned(rest[0] if rest else {}))

    def _basic(self, stats: CacheStats | None, current: dict[Any, Any]) -> Any:
        events = CounterMetricFamily(
            "curator_cache_events",
            "Cache lookups by outcome (hit_exact, hit_semantic, miss_<reason>), stores, "
            "evictions and invalidations, by category",
            labels=["category", "event"],
        )
        entries = GaugeMetricFamily(
            "curator_cache_entries", "Entries by category", labels=["category"]
        )
        size = GaugeMetricFamily("curator_cache_bytes", "Bytes by category", labels=["category"])
        for cat, counters in _public(stats.categories if stats else {}).items():
            for what, n in counters.items():
                if what == "entries":
                    entries.add_metric([cat], n)
                elif what == "bytes":
                    size.add_metric([cat], n)
                else:
                    events.add_metric([cat, what], n)
        load = GaugeMetricFamily("curator_model_load", "Downstream model load", labels=["model"])
        pressure = GaugeMetricFamily(
            "curator_model_pressure", "Load pressure on cache policies (0..1)", labels=["model"]
        )
        for model, m in (stats.models if stats else {}).items():
            load.add_metric([model], m.load)
            pressure.add_metric([model], m.pressure)
        threshold = GaugeMetricFamily(
            "curator_cache_threshold",
            "Current similarity threshold by category and model",
            labels=["category", "model"],
        )
        ttl = GaugeMetricFamily(
            "curator_cache_ttl_seconds",
            "Current TTL of new entries by category and model",
            labels=["category", "model"],
        )
        for (cat, model), (t, life) in current.items():
            if cat not in CATALOGUE:
                continue  # a setting of a category that is not public has no aggregate
            threshold.add_metric([cat, model], t)
            ttl.add_metric([cat, model], life)
        yield from (events, entries, size, load, pressure, threshold, ttl)


def _learned(by_cat: dict[str, dict[str, Any]]) -> Any:
    """The calibration summary's series (see CacheState)."""
    states = GaugeMetricFamily(
        "curator_cache_calibrations",
        "Tenants' category calibrations by state (off, learning, learned, bound_unreachable)",
        labels=["category", "state"],
    )
    feedback = GaugeMetricFamily(
        "curator_cache_calibration_feedback",
        "Feedback observations held by category calibrations, by outcome",
        labels=["category", "outcome"],
    )
    learned = GaugeMetricFamily(
        "curator_cache_learned_threshold",
        "Lowest and highest learned category threshold over tenants",
        labels=["category", "stat"],
    )
    bound = GaugeMetricFamily(
        "curator_cache_false_hit_bound",
        "Highest upper bound of the false-hit rate at a learned threshold over tenants",
        labels=["category"],
    )
    entries = GaugeMetricFamily(
        "curator_cache_entry_thresholds",
        "Entries with feedback, and those whose own threshold is raised, lowered or refusing",
        labels=["category", "state"],
    )
    entry_fb = GaugeMetricFamily(
        "curator_cache_entry_feedback",
        "Feedback observations held by per-entry thresholds, by outcome",
        labels=["category", "outcome"],
    )
    for cat, d in by_cat.items():
        for state, n in d["states"].items():
            states.add_metric([cat, state], n)
        feedback.add_metric([cat, "correct"], d["feedback"] - d["feedback_wrong"])
        feedback.add_metric([cat, "wrong"], d["feedback_wrong"])
        for stat in ("min", "max"):
            if d[f"learned_threshold_{stat}"] == d[f"learned_threshold_{stat}"]:  # not nan
                learned.add_metric([cat, stat], d[f"learned_threshold_{stat}"])
        if d["false_hit_bound_max"] == d["false_hit_bound_max"]:
            bound.add_metric([cat], d["false_hit_bound_max"])
        entries.add_metric([cat, "with_feedback"], d["entries_with_feedback"])
        for state in ("raised", "lowered", "refusing"):
            entries.add_metric([cat, state], d[f"entries_{state}"])
        entry_fb.add_metric([cat, "correct"], d["entry_feedback"] - d["entry_feedback_wrong"])
        entry_fb.add_metric([cat, "wrong"], d["entry_feedback_wrong"])
    yield from (states, feedback, learned, bound, entries, entry_fb)


def _public_learned(by_cat: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The calibration summary with every non-built-in category folded into "other" (counts
    summed, ranges widened)."""
    out: dict[str, dict[str, Any]] = {}
    for cat, d in by_cat.items():
        name = cat if cat in CATALOGUE else "other"
        o = out.get(name)
        if o is None:
            out[name] = {**d, "states": dict(d["states"])}
            continue
        for k, v in d.items():
            if k == "states":
                for s, n in v.items():
                    o["states"][s] = o["states"].get(s, 0) + n
            elif k.endswith(("_min", "_max")):  # nan: none learned
                o[k] = float(np.nanmin([o[k], v]) if k.endswith("_min") else np.nanmax([o[k], v]))
            else:
                o[k] += v
    return out


def _public(by_cat: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Counters by category with every non-built-in category summed into "other"."""
    out: dict[str, dict[str, int]] = {}
    for cat, counters in by_cat.items():
        public = cat in CATALOGUE or cat == "*"  # "*": invalidations of every category
        d = out.setdefault(cat if public else "other", {})
        for what, n in counters.items():
            d[what] = d.get(what, 0) + n
    return out


def serve_metrics(
    port: int,
    describe: Callable[[], dict[str, tuple[int, int, int]]],
    cache_state: Callable[[], tuple[Any, ...]] | None = None,
    host: str = "127.0.0.1",
) -> Any:
    """Expose the metrics on http://<host>:<port>/metrics; returns the HTTP server."""
    REGISTRY.register(CollectionSizes(describe))
    if cache_state is not None:
        REGISTRY.register(CacheState(cache_state))
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return server
