"""One error hierarchy for the whole database.

Class names mirror gRPC status codes so that the server can map them in one place and the
client can raise the same class again. Messages read "expected X, got Y".
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "CuratorError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TenantMoved",
    "TenantMoving",
    "Unauthenticated",
    "Unavailable",
]


class CuratorError(Exception):
    """Base class of every error the database raises on purpose."""

    #: Name of the matching gRPC status code.
    code = "UNKNOWN"


class InvalidArgument(CuratorError, ValueError):
    """The request is malformed: wrong shape, dtype, NaN, bad id, k out of range..."""

    code = "INVALID_ARGUMENT"


class NotFound(CuratorError, KeyError):
    """A named thing (tenant, collection, vector id, category) does not exist."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that.
        return str(self.args[0]) if self.args else ""


class AlreadyExists(CuratorError):
    code = "ALREADY_EXISTS"


class PermissionDenied(CuratorError):
    code = "PERMISSION_DENIED"


class Unauthenticated(CuratorError):
    code = "UNAUTHENTICATED"


class ResourceExhausted(CuratorError):
    """A limit was hit: request size, quota, disk full."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(CuratorError):
    """The system is not in a state where the operation can run (e.g. read-only)."""

    code = "FAILED_PRECONDITION"


class Unavailable(CuratorError):
    code = "UNAVAILABLE"


class TenantMoving(Unavailable):
    """The tenant is being handed to another node: its writes are refused (never
    acknowledged) for the short handoff; retry after refreshing its placement."""

    reason = "TENANT_MOVING"

    def __init__(self, message: str, *, tenant: str = "", epoch: int = 0) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.epoch = epoch


class TenantMoved(Unavailable):
    """The tenant lives on another node now (`node`, at `epoch`; `address`: its host:port
    when the answering node knew it): ask that node."""

    reason = "TENANT_MOVED"

    def __init__(
        self, message: str, *, tenant: str = "", node: str = "", epoch: int = 0, address: str = ""
    ) -> None:
        super().__init__(message)
        self.tenant = tenant
        self.node = node
        self.epoch = epoch
        self.address = address


class DeadlineExceeded(CuratorError):
    code = "DEADLINE_EXCEEDED"


class Internal(CuratorError):
    code = "INTERNAL"
