"""The coordinator of sharded rounds over gRPC: the service shard 0 hosts beside its
aggregator, and the link the other shards' engines use to reach it. The protocol rules live in
`securefl.rounds.sharding.Coordinator`; this is transport only.

Only the federation's aggregator (every shard holds its certificate) may call the coordinator:
a caller that could report parts as validated could commit a client no shard holds and stall
the round."""

from __future__ import annotations

import grpc

from ..federation import Federation
from ..identity import check_identifier
from ..pki import AGGREGATOR, PartyName
from ..rounds.sharding import READY_SECONDS, Coordinator
from ..tls import TlsConfig
from ..v1 import shard_pb2, shard_pb2_grpc
from .rpc import authorize, channel, invoke, translate_errors

CLOSE_POLL_SECONDS = 5.0  # an AwaitClose long-poll answers "not yet" after this


class CoordinatorService(shard_pb2_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator, federation: Federation) -> None:
        self._coordinator = coordinator
        self._federation = federation

    def _authorize(self, context: grpc.ServicerContext) -> None:
        authorize(context, self._federation, (AGGREGATOR,), self._federation.aggregator.party_id,
                  "coordinate sharded rounds")

    def register(self, server: grpc.Server) -> None:
        shard_pb2_grpc.add_CoordinatorServicer_to_server(self, server)

    @translate_errors
    def Ready(self, request, context) -> shard_pb2.ReadyReply:
        self._authorize(context)
        check_identifier(request.round_id, "round id")
        check_identifier(request.client_id, "client id")
        return shard_pb2.ReadyReply(commit=self._coordinator.ready(request.round_id, request.client_id, request.shard))

    @translate_errors
    def AwaitClose(self, request, context) -> shard_pb2.CloseDecision:
        self._authorize(context)
        check_identifier(request.round_id, "round id")
        contributors = self._coordinator.await_close(request.round_id, CLOSE_POLL_SECONDS)
        return shard_pb2.CloseDecision(decided=contributors is not None, contributors=contributors or [])


class CoordinatorClient:
    """`CoordinatorLink` to a coordinator in another process."""

    def __init__(self, address: str, tls: TlsConfig | None, server: PartyName, insecure: bool = False) -> None:
        self._channel = channel(address, tls, server=server, insecure=insecure)
        self._stub = shard_pb2_grpc.CoordinatorStub(self._channel)

    def ready(self, round_id: str, client_id: str, shard: int) -> bool:
        request = shard_pb2.ReadyRequest(round_id=round_id, client_id=client_id, shard=shard)
        return invoke(self._stub.Ready, request, timeout=READY_SECONDS + 10, wait_for_ready=True).commit

    def await_close(self, round_id: str, timeout: float) -> list[str] | None:
        decision = invoke(self._stub.AwaitClose, shard_pb2.CloseRequest(round_id=round_id),
                          timeout=CLOSE_POLL_SECONDS + timeout, wait_for_ready=True)
        return list(decision.contributors) if decision.decided else None
