"""Domain errors -> gRPC status codes and HTTP statuses, in one place."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from curator.errors import CuratorError, TenantMoved, TenantMoving
from curator_api import cluster_wire

__all__ = ["HTTP_STATUS_OF", "STATUS_OF", "rpc"]

log = logging.getLogger(__name__)

STATUS_OF = {code.name: code for code in grpc.StatusCode}

#: The HTTP API's status for each error `code` (the usual gRPC <-> HTTP correspondence); the
#: body names the error class, as over gRPC: {"error": "NotFound", "message": "expected ..."}.
HTTP_STATUS_OF = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

F = TypeVar("F", bound=Callable[..., Any])


def rpc(fn: F) -> F:
    """Wrap a servicer method: a CuratorError aborts the call with its status code and
    message; anything else is logged and becomes INTERNAL (no details leak)."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call ran")
        try:
            return fn(self, request, context)
        except CuratorError as e:
            if isinstance(e, TenantMoved | TenantMoving):  # where the tenant lives now
                context.set_trailing_metadata(cluster_wire.moved_metadata(e))
            context.abort(STATUS_OF.get(e.code, grpc.StatusCode.UNKNOWN), str(e))
        except grpc.RpcError:
            raise
        except Exception:
            if context.code() is not None and context.code() != grpc.StatusCode.OK:
                raise  # already aborted
            log.exception("unexpected error in %s", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error (see the server log)")

    return wrapper  # type: ignore[return-value]
