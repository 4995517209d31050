"""Server configuration: defaults, then CURATOR_* environment variables, then CLI flags."""

from __future__ import annotations

import dataclasses

__all__ = ["ServerConfig"]


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """address: host:port to bind (port 0 picks a free one).
    admin_key: registered as an admin key at start (if empty and none exists, one is
        generated and logged once).
    tls_cert / tls_key: PEM files; both set -> TLS, else plaintext.
    threads: worker threads (parallel searches).
    max_tenant_inflight: the most worker threads one tenant's calls may hold at once (0 = half
        of `threads`, at least 1); its calls past that get RESOURCE_EXHAUSTED at once. The
        admin key is not limited.
    max_message_bytes: largest request or response.
    metrics_port: Prometheus metrics on 127.0.0.1:<port> (0 = off).
    backup_dir: where Backup RPCs write (default: <data_dir>/backups).
    grace_seconds: how long a shutdown lets in-flight calls finish.
    """

    address: str = "127.0.0.1:50051"
    admin_key: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    threads: int = 8
    max_tenant_inflight: int = 0
    max_message_bytes: int = 64 << 20
    metrics_port: int = 0
    backup_dir: str = ""
    grace_seconds: float = 10.0
    log_level: str = "INFO"
