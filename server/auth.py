"""Authentication: an interceptor turns the API key in the metadata into a Principal.

The principal reaches the servicer through a context variable, set in the worker thread just
before the method runs. Health checks and reflection need no key.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc

from curator.auth import Principal
from curator.errors import CuratorError, Unavailable
from server.status import STATUS_OF

__all__ = ["AuthInterceptor", "current_principal"]

current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")

_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def _key_from(metadata: tuple[Any, ...] | None) -> str | None:
    for item in metadata or ():
        name, value = item.key.lower(), item.value
        if name == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
        if name == "x-api-key" and isinstance(value, str):
            return value.strip()
    return None


def _aborting(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.ServerInterceptor):
    """`authenticate(key) -> Principal` raises Unauthenticated (or Unavailable while the
    database is still loading)."""

    def __init__(self, authenticate: Callable[[str | None], Principal]) -> None:
        self._authenticate = authenticate

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(_OPEN_PREFIXES):
            return handler
        try:
            principal = self._authenticate(_key_from(details.invocation_metadata))
        except (CuratorError, Unavailable) as e:
            return _aborting(STATUS_OF.get(e.code, grpc.StatusCode.UNAUTHENTICATED), str(e))
        inner = handler.unary_unary

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            token = current_principal.set(principal)
            try:
                return inner(request, context)
            finally:
                current_principal.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
