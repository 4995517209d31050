"""Who may do what, for every transport (gRPC servicers and the HTTP API): the admin
manages; a tenant key acts only for its own tenant and learns only about its own vectors.
Each function takes the request's Principal and raises before the Database is called."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from curator import __version__
from curator.auth import Principal
from curator.database import Database
from curator.errors import InvalidArgument, NotFound, PermissionDenied
from curator.results import CollectionInfo, IssuedKey, ModelLoad, ServerInfo

__all__ = [
    "acting_tenant",
    "collection_view",
    "issue_key",
    "page",
    "report_load",
    "require_admin",
    "rotate_key",
    "search_tenants",
    "server_info",
]

_MAX_PAGE = 1000


def require_admin(p: Principal) -> None:
    if not p.is_admin:
        raise PermissionDenied(f"expected an admin key, got a key of {p}")


def acting_tenant(p: Principal, requested: str | None, required: bool) -> str | None:
    """The tenant a call acts for: a tenant key acts for itself only; the admin names one
    (or, where allowed, none: every tenant)."""
    if not p.is_admin:
        if requested and requested != p.tenant:
            raise PermissionDenied("expected the key's own tenant, got another tenant")
        return p.tenant
    if not requested and required:
        raise InvalidArgument("expected a tenant to act as (the admin key acts for none)")
    return requested or None


def search_tenants(p: Principal, requested: Sequence[str]) -> list[str]:
    tenants = list(requested)
    if not p.is_admin:
        if any(t != p.tenant for t in tenants):
            raise PermissionDenied("expected to search the key's own tenant, got another")
        return [p.tenant or ""]
    if not tenants:
        raise InvalidArgument("expected tenants to search for (the admin key acts for none)")
    return tenants


def collection_view(db: Database, name: str, p: Principal) -> CollectionInfo:
    info = db.describe_collection(name)
    if p.is_admin:
        return info
    return dataclasses.replace(  # a tenant learns only about its own vectors
        info, vectors=db.count(name, tenant=p.tenant), tenants=0, trained=False, seq=0, memory={}
    )


def issue_key(db: Database, p: Principal, tenant: str, admin: bool, description: str) -> IssuedKey:
    require_admin(p)
    if admin and tenant:
        raise InvalidArgument(f"expected no tenant for an admin key, got {tenant!r}")
    if not admin and not tenant:
        raise InvalidArgument("expected a tenant for the key (or admin), got none")
    return db.issue_key(None if admin else tenant, description)


def rotate_key(db: Database, p: Principal, key_id: str) -> IssuedKey:
    """Empty key_id: the caller's own key (a tenant key may rotate only that one)."""
    if key_id and key_id != p.key_id:
        require_admin(p)
    return db.rotate_key(key_id or p.key_id)


def server_info(db: Database, p: Principal, started: float) -> ServerInfo:
    """started: time.monotonic() when the server started."""
    info = dataclasses.replace(
        db.server_info(),
        version=__version__,
        principal=str(p),
        uptime_seconds=time.monotonic() - started,
    )
    if p.is_admin:
        return info
    # a tenant key sees neither the database-wide seq nor how many tenants there are
    return dataclasses.replace(info, seq=db.tenant_seq(p.tenant or ""), tenants=0)


def page(items: Sequence[str], size: int, token: str) -> tuple[list[str], str]:
    """A page of the sorted `items` after the one `token` names; returns it and the next
    token ("" at the end)."""
    size = min(size or 100, _MAX_PAGE)
    start = 0
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("expected a page_token from a previous response") from None
        start = (
            int(np.searchsorted(np.array(items, dtype=object), after, side="right")) if items else 0
        )
    out = list(items[start : start + size])
    more = start + size < len(items)
    return out, base64.urlsafe_b64encode(out[-1].encode()).decode() if more and out else ""


def report_load(
    db: Database, p: Principal, model: str, load: float | None, capacity_rps: float | None
) -> ModelLoad:
    """Admin: set a model's capacity and/or report its load; answers its load state
    (NotFound for a model with neither)."""
    require_admin(p)
    if capacity_rps is not None:
        db.cache_set_capacity(model, capacity_rps)
    state = (
        db.cache_report_load(model, load)
        if load is not None
        else db.cache_stats().models.get(model)
    )
    if state is None:
        raise NotFound(f"expected a model with a load or capacity, got {model!r}")
    return state
