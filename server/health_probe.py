"""`python -m server.health_probe [ADDRESS]`: exit 0 if the server at ADDRESS (default
127.0.0.1:50051, or CURATOR_ADDRESS) reports SERVING on the gRPC health service, else 1.

For container health checks and scripts; needs no API key (health is unauthenticated).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, timeout: float = 3.0) -> str:
    """The overall health status name ("SERVING", "NOT_SERVING", ...) or the gRPC error."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    address = args[0] if args else os.environ.get("CURATOR_ADDRESS", "127.0.0.1:50051")
    # A server bound to all interfaces is probed on loopback.
    address = address.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "127.0.0.1:")
    status = check(address)
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
