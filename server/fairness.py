"""Per-tenant fairness: a tenant holds at most `limit` of the server's worker threads at once.

The check runs in the worker thread, inside the authentication interceptor (so the principal
is known), before the method: a call past its tenant's limit is refused at once with
RESOURCE_EXHAUSTED and holds its thread for microseconds, so one tenant's flood of slow calls
(long cache waits, big searches) cannot starve the others. The admin is not limited: it acts
for the operator, and its calls are not a tenant's to ration.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from curator.errors import InvalidArgument
from server.auth import current_principal

__all__ = ["TenantLimiter", "default_tenant_limit"]


def default_tenant_limit(threads: int) -> int:
    """Half of the worker threads (at least one): two busy tenants can saturate the server,
    one cannot."""
    return max(1, threads // 2)


class TenantLimiter(grpc.ServerInterceptor):
    """Counts in-flight calls per tenant; `limit` is the most one tenant may run at once."""

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"expected max_tenant_inflight an integer >= 1, got {limit!r}")
        self.limit = limit
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}

    def inflight(self, tenant: str) -> int:
        with self._lock:
            return self._inflight.get(tenant, 0)

    def _enter(self, tenant: str) -> bool:
        with self._lock:
            n = self._inflight.get(tenant, 0)
            if n >= self.limit:
                return False
            self._inflight[tenant] = n + 1
            return True

    def _leave(self, tenant: str) -> None:
        with self._lock:
            n = self._inflight[tenant] - 1
            if n:
                self._inflight[tenant] = n
            else:  # no entry per idle tenant: the dict stays as small as the busy set
                del self._inflight[tenant]

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            principal = current_principal.get(None)
            tenant = None if principal is None else principal.tenant
            if tenant is None:  # the admin, or an open method (health, reflection)
                return inner(request, context)
            if not self._enter(tenant):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"expected at most {self.limit} concurrent calls per tenant "
                    f"(max_tenant_inflight), got one more from {tenant!r}; retry later",
                )
            try:
                return inner(request, context)
            finally:
                self._leave(tenant)

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
