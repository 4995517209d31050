"""Building, starting and stopping the gRPC server."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from curator.auth import Principal
from curator.database import Database
from curator.errors import FailedPrecondition, InvalidArgument, Unavailable
from curator.index.warmup import warm_kernels
from curator_api.v1 import curator_pb2 as pb
from curator_api.v1 import curator_pb2_grpc as pb_grpc
from server.auth import AuthInterceptor
from server.cluster import ClusterNode
from server.config import ServerConfig
from server.fairness import TenantLimiter, default_tenant_limit
from server.metrics import MetricsInterceptor
from server.moves import NodesServicer
from server.service import AdminServicer, CacheServicer, VectorsServicer

__all__ = ["Server", "create_server"]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["Admin"].full_name,
    pb.DESCRIPTOR.services_by_name["Vectors"].full_name,
    pb.DESCRIPTOR.services_by_name["Cache"].full_name,
)


class Server:
    """A running server: `port` is the bound port; `stop()` finishes in-flight calls, then
    closes the database (if the server opened it)."""

    def __init__(
        self,
        grpc_server: grpc.Server,
        port: int,
        state: Any,
        health_servicer: health.HealthServicer,
        owns_db: bool,
        http: Any = None,
    ) -> None:
        self.grpc = grpc_server
        self.http = http  # server.http.HttpServer, or None
        self.http_port: int | None = http.port if http is not None else None
        self.port = port
        self._state = state
        self._health = health_servicer
        self._owns_db = owns_db
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def database(self) -> Database | None:
        db: Database | None = self._state.db
        return db

    def wait_ready(self, timeout: float | None = None) -> bool:
        return bool(self._state.ready.wait(timeout))

    def stop(self, grace: float = 10.0) -> None:
        """Idempotent; a second caller waits until the first one has finished."""
        with self._stop_lock:
            if self._stopped:
                return
            self._health.enter_graceful_shutdown()
            if self.http is not None:
                self.http.stop(grace)
            self.grpc.stop(grace).wait()
            if self._state.cluster is not None:
                self._state.cluster.close()
            if self._owns_db and self._state.db is not None:
                self._state.db.close()
            self._stopped = True
            log.info("server stopped")

    def wait(self) -> None:
        self.grpc.wait_for_termination()


class _State:
    def __init__(self) -> None:
        self.db: Database | None = None
        self.cluster: ClusterNode | None = None
        self.ready = threading.Event()
        self.started = time.monotonic()

    def authenticate(self, key: str | None) -> Principal:
        if self.db is None or not self.ready.is_set():
            raise Unavailable("expected a loaded database, it is still starting")
        if self.cluster is not None:  # a key issued on another node, through etcd
            return self.cluster.authenticate(self.db, key)
        return self.db.keys.authenticate(key)


def create_server(
    database: Database | Callable[[], Database],
    config: ServerConfig | None = None,
    cluster: Callable[[int], ClusterNode] | None = None,
) -> Server:
    """Bind and start a server for `database` (or for the database a factory opens, in the
    background: health reports NOT_SERVING until it has loaded and the search kernels are
    compiled). Returns the Server, whose `port` is the port bound (config.address may use
    port 0). cluster: cluster mode, `cluster(port)` joins the cluster (Unavailable without
    etcd); the node registers once its database serves."""
    config = config or ServerConfig()
    state = _State()
    opts = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    limiter = TenantLimiter(config.max_tenant_inflight or default_tenant_limit(config.threads))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="curator-rpc"),
        # Outermost first: the limiter runs after authentication has named the tenant.
        interceptors=[MetricsInterceptor(), AuthInterceptor(state.authenticate), limiter],
        options=opts,
        maximum_concurrent_rpcs=config.threads * 16,
    )
    pb_grpc.add_AdminServicer_to_server(AdminServicer(state), server)
    pb_grpc.add_VectorsServicer_to_server(VectorsServicer(state), server)
    pb_grpc.add_CacheServicer_to_server(CacheServicer(state), server)
    if cluster is not None:  # the calls a move makes on this node
        pb_grpc.add_NodesServicer_to_server(NodesServicer(state), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if config.tls_cert and config.tls_key:
        creds = grpc.ssl_server_credentials(
            [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
        )
        port = server.add_secure_port(config.address, creds)
    else:
        port = server.add_insecure_port(config.address)
    if port == 0:
        raise OSError(f"could not bind {config.address}")
    if cluster is not None:
        state.cluster = cluster(port)

    def set_serving(status: Any) -> None:
        for name in ("", *SERVICE_NAMES):
            health_servicer.set(name, status)

    def attach(db: Database) -> None:
        state.db = db
        if config.backup_dir:
            db.backup_dir = Path(config.backup_dir)
        if state.cluster is not None:  # mirror the registry, then take the node's lease
            state.cluster.attach(db)
        state.ready.set()
        set_serving(health_pb2.HealthCheckResponse.SERVING)
        since = time.monotonic() - state.started
        log.info("start-up: serving on port %d, %.2f s after start", port, since)

    set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
    http = _start_http(state, config) if config.http_address else None
    server.start()
    wrapper = Server(server, port, state, health_servicer, callable(database), http)
    if isinstance(database, Database):
        attach(database)
    else:
        factory = database

        def load() -> None:
            try:
                db = factory()
            except Exception:
                log.exception("the database failed to open; the server keeps NOT_SERVING")
                return
            try:
                warm_kernels()  # so that no query waits for numba
            except Exception:
                log.exception("warming the kernels failed; the first queries will compile them")
            attach(db)

        threading.Thread(target=load, name="curator-load", daemon=True).start()
    return wrapper


def _start_http(state: _State, config: ServerConfig) -> Any:
    try:
        from server.http import serve_http
    except ImportError as e:
        raise FailedPrecondition(
            f"expected fastapi and uvicorn for the HTTP API (pip install 'curator-db[http]'), "
            f"got {e}"
        ) from None
    host, _, port = config.http_address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument(f"expected http_address host:port, got {config.http_address!r}")
    http = serve_http(
        state, host.strip("[]"), int(port), config.max_message_bytes, config.threads * 16
    )
    log.info("HTTP API on http://%s:%d (OpenAPI at /openapi.json)", host, http.port)
    return http


def install_signal_handlers(server: Server, grace: float) -> None:
    """SIGTERM / SIGINT: stop accepting calls, finish in-flight ones, close LMDB."""

    def handler(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down (grace %.0f s)", signum, grace)
        threading.Thread(target=server.stop, args=(grace,), daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
