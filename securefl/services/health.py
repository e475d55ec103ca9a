"""The standard gRPC health service (grpc.health.v1) on every securefl server.

A server reports NOT_SERVING from its start until it is ready (stores opened, rounds
recovered), then SERVING, and NOT_SERVING again for good once it drains for a shutdown, so a
supervisor or load balancer stops sending it work. The health service sits on the server's own
port, behind the same mutual TLS: a probe presents a certificate of the federation's CA (any
role; the answer reveals only whether the service is up)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

OVERALL = ""  # the name a probe asks for when it names no service


class Health:
    """Serving status of one server: for the whole server and for each of its services."""

    def __init__(self, *services: str) -> None:
        self._servicer = health.HealthServicer()
        self._names = (OVERALL, *services)
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def register(self, server: grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    def serving(self) -> None:
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def draining(self) -> None:
        """NOT_SERVING from now until the process exits (later updates are ignored)."""
        self._servicer.enter_graceful_shutdown()

    def _set(self, status: int) -> None:
        for name in self._names:
            self._servicer.set(name, status)


def service_name(module, service: str) -> str:
    """The full gRPC name of `service` in a generated `*_pb2` module, e.g. securefl.v1.Aggregator."""
    return module.DESCRIPTOR.services_by_name[service].full_name


def check(channel: grpc.Channel, service: str = OVERALL, timeout: float = 5.0) -> str:
    """Ask a server's health service; the status name (SERVING, NOT_SERVING, ...)."""
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
