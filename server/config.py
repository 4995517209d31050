"""Server configuration: defaults, then CURATOR_* environment variables, then CLI flags."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from curator.errors import InvalidArgument

__all__ = ["MIN_ADMIN_KEY_LEN", "ServerConfig", "check_admin_key", "configured_admin_key"]

log = logging.getLogger(__name__)

MIN_ADMIN_KEY_LEN = 32
_MIN_DISTINCT = 10


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """address: host:port to bind (port 0 picks a free one).
    admin_key: registered as an admin key at start (if empty and none exists, one is
        generated and written to <data_dir>/admin.key). At least 32 characters, not a
        repeated or low-variety string (check_admin_key).
    admin_key_file: read the admin key from this file instead (keeps it out of the process
        list; CURATOR_ADMIN_KEY_FILE / --admin-key-file).
    tls_cert / tls_key: PEM files; both set -> TLS, else plaintext.
    threads: worker threads (parallel searches).
    max_tenant_inflight: the most worker threads one tenant's calls may hold at once (0 = half
        of `threads`, at least 1); its calls past that get RESOURCE_EXHAUSTED at once. The
        admin key is not limited.
    max_message_bytes: largest request or response.
    metrics_port: Prometheus metrics on <metrics_host>:<port> (0 = off).
    metrics_host: the metrics' interface (loopback; 0.0.0.0 in a container, for Prometheus).
    backup_dir: where Backup RPCs write (default: <data_dir>/backups).
    grace_seconds: how long a shutdown lets in-flight calls finish.
    http_address: host:port of the HTTP/JSON API (server/http.py; "" = off, port 0 picks a
        free one; needs the `http` extra).
    log_level: DEBUG, INFO, WARNING...
    """

    address: str = "127.0.0.1:50051"
    admin_key: str = ""
    admin_key_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    threads: int = 8
    max_tenant_inflight: int = 0
    max_message_bytes: int = 64 << 20
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    backup_dir: str = ""
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    http_address: str = ""


def check_admin_key(key: str) -> str:
    """`key` if it is strong enough to guard every tenant's data, else InvalidArgument: at
    least 32 characters, at least 10 distinct ones, not a shorter string repeated."""
    periodic = key in (key + key)[1:-1]
    if len(key) < MIN_ADMIN_KEY_LEN or len(set(key)) < _MIN_DISTINCT or periodic:
        raise InvalidArgument(
            f"expected an admin key of at least {MIN_ADMIN_KEY_LEN} characters with at least "
            f"{_MIN_DISTINCT} distinct ones and no repeated pattern (e.g. `python -c "
            '"import secrets; print(secrets.token_urlsafe(32))"`), got a weak key of '
            f"{len(key)} characters; leave it unset to have one generated"
        )
    return key


def configured_admin_key(config: ServerConfig) -> str:
    """The admin key of the configuration (from admin_key or admin_key_file), checked; "" if
    none is configured."""
    if config.admin_key and config.admin_key_file:
        raise InvalidArgument("expected one of admin_key and admin_key_file, got both")
    if not config.admin_key_file:
        return check_admin_key(config.admin_key) if config.admin_key else ""
    path = Path(config.admin_key_file)
    try:
        key = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as e:
        raise InvalidArgument(f"expected a readable admin key file, got {e}") from None
    if mode & 0o077:
        log.warning("the admin key file %s is readable by others (mode %o)", path, mode & 0o777)
    if not key:
        raise InvalidArgument(f"expected an admin key in {path}, got an empty file")
    return check_admin_key(key)
