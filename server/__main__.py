"""`python -m server` (or `curator-server`): run the Curator DB gRPC service.

Settings come from defaults, then CURATOR_* environment variables (e.g. CURATOR_DATA_DIR,
CURATOR_ADDRESS, CURATOR_ADMIN_KEY_FILE, CURATOR_ADMIN_KEY, CURATOR_SYNC; the semantic cache's
CURATOR_CACHE_<FIELD> of curator.cache.CacheConfig), then the flags below. The data directory
defaults to ./curator-data (mode 0700, its files 0600). If no admin key is configured and none
exists yet, one is generated and written to <data-dir>/admin.key (mode 0600). A configured
admin key must be strong (at least 32 characters, not a repeated pattern); prefer
--admin-key-file or the environment to --admin-key, which shows in the process list.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from curator.cache.config import CacheConfig
from curator.cache.policy_state import calibration_summary
from curator.config import DatabaseConfig, from_env
from curator.database import Database
from curator.errors import InvalidArgument, Unavailable
from curator.results import CacheStats
from curator.storage.files import private_dir
from server.app import create_server, install_signal_handlers
from server.config import ServerConfig, configured_admin_key
from server.metrics import serve_metrics

log = logging.getLogger("server")


def _parse(argv: list[str] | None) -> tuple[ServerConfig, DatabaseConfig, str, argparse.Namespace]:
    ap = argparse.ArgumentParser(
        prog="python -m server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data-dir", help="LMDB data directory (default ./curator-data)")
    ap.add_argument("--address", help="host:port to listen on (default 127.0.0.1:50051)")
    ap.add_argument("--admin-key", help="admin API key to register (visible in the process list)")
    ap.add_argument("--admin-key-file", help="file holding the admin API key to register")
    ap.add_argument("--tls-cert", help="PEM certificate (with --tls-key: serve TLS)")
    ap.add_argument("--tls-key", help="PEM private key")
    ap.add_argument("--threads", type=int, help="worker threads (default 8)")
    ap.add_argument(
        "--max-tenant-inflight",
        type=int,
        help="worker threads one tenant may hold at once (default: half of --threads)",
    )
    ap.add_argument("--metrics-port", type=int, help="Prometheus metrics port (0 = off)")
    ap.add_argument(
        "--http-port",
        type=int,
        help="serve the HTTP/JSON API on this port too, on the --address host (default off; "
        "needs the http extra)",
    )
    ap.add_argument(
        "--no-sync",
        action="store_true",
        help="do not fsync each write (faster; an OS crash may lose the last writes)",
    )
    ap.add_argument(
        "--cluster",
        action="store_true",
        help="join a cluster: tenants placed across nodes through etcd (needs --node-id, "
        "--etcd and the cluster extra; every node must have the same admin key)",
    )
    ap.add_argument("--node-id", help="this node's name in the cluster (e.g. n1)")
    ap.add_argument("--etcd", help="host:port of etcd's client URL (e.g. 127.0.0.1:2379)")
    ap.add_argument(
        "--advertise",
        help="host:port other nodes and clients reach this node at (default: --address, "
        "with the port bound)",
    )
    ap.add_argument(
        "--bundle-dir",
        help="cluster: the directory where tenant bundles travel between nodes during a move "
        "(every node must reach the same one, e.g. a shared file system)",
    )
    ap.add_argument(
        "--bundle-s3",
        help="cluster: s3://bucket/prefix for tenant bundles instead (endpoint and credentials "
        "from the usual AWS_* environment, e.g. AWS_ENDPOINT_URL; needs boto3)",
    )
    ap.add_argument(
        "--lease-ttl",
        type=int,
        default=10,
        help="cluster: seconds a dead node keeps its lease, its controller role and the moves "
        "it drove, before others take over (default 10; 2-300)",
    )
    ap.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default INFO)")
    ap.add_argument("--log-format", choices=("json", "text"), default="json")
    a = ap.parse_args(argv)
    server = from_env(
        ServerConfig,
        address=a.address,
        admin_key=a.admin_key,
        admin_key_file=a.admin_key_file,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        threads=a.threads,
        max_tenant_inflight=a.max_tenant_inflight,
        metrics_port=a.metrics_port,
        log_level=a.log_level,
    )
    if a.http_port is not None:
        host = server.address.rpartition(":")[0]
        server = dataclasses.replace(server, http_address=f"{host}:{a.http_port}")
    db = from_env(DatabaseConfig, data_dir=a.data_dir, sync=False if a.no_sync else None)
    if a.cluster and not (a.node_id and a.etcd):
        ap.error("--cluster needs --node-id and --etcd")
    if a.cluster and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", a.node_id):
        ap.error(f"expected --node-id of 1-64 letters, digits, '_', '.', '-', got {a.node_id!r}")
    if not 2 <= a.lease_ttl <= 300:
        ap.error(f"expected --lease-ttl seconds in [2, 300], got {a.lease_ttl}")
    if a.bundle_dir and a.bundle_s3:
        ap.error("expected one of --bundle-dir and --bundle-s3, got both")
    s3 = r"s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9_.-]+)*/?"
    if a.bundle_s3 and (
        not re.fullmatch(s3, a.bundle_s3) or {".", ".."} & set(a.bundle_s3[5:].split("/"))
    ):
        ap.error(f"expected --bundle-s3 s3://bucket[/prefix], got {a.bundle_s3!r}")
    if a.cluster and server.http_address:  # it would acknowledge writes of tenants homed elsewhere
        ap.error("--cluster serves gRPC only: the HTTP API does not route by placement yet")
    return server, db, a.log_format, a


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _open(db_config: DatabaseConfig, admin_key: str) -> Database:
    db = Database(db_config, cache_config=from_env(CacheConfig, prefix="CURATOR_CACHE_"))
    if admin_key:
        db.keys.ensure(admin_key, None, "admin key from configuration")
    elif not db.keys.has_admin():
        key = "cdb_admin_" + secrets.token_urlsafe(32)
        path = Path(db_config.data_dir) / "admin.key"
        db.keys.ensure(key, None, "generated admin key")  # valid before anyone can read it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        log.warning("generated an admin API key; it is in %s", path)
    return db


def _bundle_store(args: argparse.Namespace) -> Any:
    """The node's bundle store for moves (None: this node cannot take part in one)."""
    from curator.cluster.bundle_store import DirectoryStore, S3Store

    if args.bundle_dir:
        return DirectoryStore(args.bundle_dir)
    if args.bundle_s3:
        import boto3

        bucket, _, prefix = args.bundle_s3[len("s3://") :].partition("/")
        return S3Store(boto3.client("s3"), bucket, prefix.strip("/") or "curator/bundles")
    return None


def _joiner(args: argparse.Namespace, address: str, admin_key: str) -> Callable[[int], Any]:
    """cluster(port): connect to etcd as node --node-id (imported here: the cluster extra);
    `admin_key`: the cluster's, for the controller's calls to other nodes."""

    def join(port: int) -> Any:
        from curator.cluster.contracts import NodeInfo
        from curator.cluster.etcd_control import EtcdControl
        from server.cluster import ClusterNode

        advertise = args.advertise or f"{address.rpartition(':')[0]}:{port}"
        node = NodeInfo(args.node_id, advertise)
        control = EtcdControl(args.etcd, node, lease_ttl=args.lease_ttl)
        control.start()
        log.info("cluster: node %s at %s, etcd %s", args.node_id, advertise, args.etcd)
        return ClusterNode(control, args.node_id, advertise, _bundle_store(args), admin_key)

    return join


def cache_state(
    db: Database | None,
) -> tuple[CacheStats | None, dict[Any, Any], dict[str, dict[str, Any]]]:
    """Database-wide cache stats, the current default threshold / TTL of each category for
    each model with a known load, and the learned state summed per category (for the
    metrics)."""
    if db is None:
        return None, {}, {}
    stats = db.cache_stats()
    current = {}
    for model in stats.models:
        for cat, st in db.cache_policies(model=model).items():
            current[(cat, model)] = (st.threshold, st.ttl_s)
    return stats, current, calibration_summary(db.cache)


def main(argv: list[str] | None = None) -> int:
    server_config, db_config, log_format, args = _parse(argv)
    _setup_logging(server_config.log_level, log_format)
    try:
        admin_key = configured_admin_key(server_config)
    except InvalidArgument as e:
        log.error("refusing to start: %s", e)
        return 2
    if db_config.max_response_bytes >= server_config.max_message_bytes:
        log.warning(
            "max_response_bytes (%d) is not below max_message_bytes (%d): gRPC, not the "
            "database, will refuse the largest responses, after building them",
            db_config.max_response_bytes,
            server_config.max_message_bytes,
        )
    os.umask(0o077)  # everything the server writes (data, backups, keys) is private
    private_dir(db_config.data_dir)
    join = _joiner(args, server_config.address, admin_key) if args.cluster else None
    try:
        server = create_server(lambda: _open(db_config, admin_key), server_config, join)
    except Unavailable as e:
        log.error("refusing to start: %s", e)
        return 3
    install_signal_handlers(server, server_config.grace_seconds)
    log.info(
        "listening on %s (port %d), data in %s",
        server_config.address,
        server.port,
        db_config.data_dir,
    )
    if server_config.metrics_port:

        def sizes() -> dict[str, tuple[int, int, int]]:
            db = server.database
            if db is None:
                return {}
            out = {}
            for name in db.list_collections():
                info = db.describe_collection(name)
                out[name] = (info.vectors, info.tenants, info.quarantined)
            return out

        host = server_config.metrics_host
        serve_metrics(
            server_config.metrics_port, sizes, lambda: cache_state(server.database), host=host
        )
        log.info("metrics on http://%s:%d/metrics", host, server_config.metrics_port)
    server.wait()
    server.stop(server_config.grace_seconds)  # no-op if a signal already stopped it
    return 0


if __name__ == "__main__":
    sys.exit(main())
