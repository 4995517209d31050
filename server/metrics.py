"""Prometheus metrics: requests, latencies and errors by method; collection sizes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

__all__ = ["REGISTRY", "MetricsInterceptor", "serve_metrics"]

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
    """Collects vectors and tenants per collection at scrape time."""

    def __init__(self, describe: Callable[[], dict[str, tuple[int, int]]]) -> None:
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
        for name, (n_vec, n_ten) in self._describe().items():
            vectors.add_metric([name], n_vec)
            tenants.add_metric([name], n_ten)
        yield vectors
        yield tenants


def serve_metrics(port: int, describe: Callable[[], dict[str, tuple[int, int]]]) -> Any:
    """Expose the metrics on http://127.0.0.1:<port>/metrics; returns the HTTP server."""
    REGISTRY.register(CollectionSizes(describe))
    server, _ = start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
    return server
