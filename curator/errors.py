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


class DeadlineExceeded(CuratorError):
    code = "DEADLINE_EXCEEDED"


class Internal(CuratorError):
    code = "INTERNAL"
