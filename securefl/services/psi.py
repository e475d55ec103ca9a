"""PSI over gRPC: party A's servicer and party B's driver. The protocol and every rule of a
session live in securefl.psi.protocol; this module moves its messages and tells it who called.

Who called comes from a `PeerOf` function reading the call's authenticated transport: the
securefl party named by the client certificate that mutual TLS verified (`tls_peer`). The
service authorizes that peer before it reads a single request message; on a server without
TLS there is no peer, and every call is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from ..errors import InvalidInput, ServiceUnavailable
from ..psi.protocol import JoinerParty, PsiOutcome, ServerParty
from ..v1 import psi_pb2, psi_pb2_grpc
from .rpc import caller, from_rpc_error, translate_errors

PeerOf = Callable[[grpc.ServicerContext], "str | None"]


def tls_peer(context: grpc.ServicerContext) -> str | None:
    """The securefl id the verified client certificate names, or None without mutual TLS."""
    peer = caller(context)
    return peer.party.party_id if peer is not None else None


class PsiService(psi_pb2_grpc.PsiServicer):
    """Party A. `on_finish` receives the outcome of each session that completed."""

    def __init__(self, party: ServerParty, peer_of: PeerOf,
                 on_finish: Callable[[PsiOutcome], None] | None = None) -> None:
        self.party = party
        self._peer_of = peer_of
        self._on_finish = on_finish

    def register(self, server: grpc.Server) -> None:
        psi_pb2_grpc.add_PsiServicer_to_server(self, server)

    def _authorize(self, context: grpc.ServicerContext) -> None:
        self.party.authorize(self._peer_of(context))

    @translate_errors
    def Start(self, request, context) -> psi_pb2.PsiSession:
        self._authorize(context)
        session = self.party.start(request.joiner_size, request.cardinality_only)
        return psi_pb2.PsiSession(session_id=session.session_id, server_size=len(self.party.ids))

    @translate_errors
    def BlindJoinerPoints(self, request_iterator, context) -> Iterator[psi_pb2.PointBatch]:
        self._authorize(context)
        first = next(request_iterator, None)
        if first is None:
            raise InvalidInput("empty point stream")
        session = self.party.session(first.session_id)

        def batches() -> Iterator[bytes]:
            yield first.points
            for message in request_iterator:
                yield message.points

        for points in self.party.blind_joiner_points(session, batches()):
            yield psi_pb2.PointBatch(points=points)

    @translate_errors
    def ServerPoints(self, request, context) -> Iterator[psi_pb2.PointBatch]:
        self._authorize(context)
        session = self.party.session(request.session_id)
        for points in self.party.own_points(session):
            yield psi_pb2.PointBatch(points=points)

    @translate_errors
    def Finish(self, request, context) -> psi_pb2.PsiFinished:
        self._authorize(context)
        session = self.party.session(request.session_id)
        outcome = self.party.finish(session, list(request.server_positions), request.cardinality)
        if self._on_finish is not None:
            self._on_finish(outcome)
        return psi_pb2.PsiFinished(cardinality=outcome.cardinality)


def join(psi_channel: grpc.Channel, party: JoinerParty, cardinality_only: bool = False,
         timeout: float = 3600) -> PsiOutcome:
    """Party B: run one session against the PSI service behind `psi_channel`."""
    stub = psi_pb2_grpc.PsiStub(psi_channel)
    traffic = {"sent": 0, "received": 0}

    def received(stream) -> Iterator[bytes]:
        for message in stream:
            traffic["received"] += message.ByteSize()
            yield message.points

    try:
        started = stub.Start(psi_pb2.PsiStart(joiner_size=len(party.ids), cardinality_only=cardinality_only),
                             timeout=timeout)
        session = party.session(started.session_id, started.server_size)

        def my_points() -> Iterator[psi_pb2.PointBatch]:
            for points in session.blinded_points():
                message = psi_pb2.PointBatch(session_id=started.session_id, points=points)
                traffic["sent"] += message.ByteSize()
                yield message

        session.accept_own_doubled(received(stub.BlindJoinerPoints(my_points(), timeout=timeout)))
        reference = psi_pb2.PsiSessionRef(session_id=started.session_id)
        session.accept_server_points(received(stub.ServerPoints(reference, timeout=timeout)))
        result = session.result(cardinality_only)
        matches = psi_pb2.PsiMatches(session_id=started.session_id, server_positions=result.server_positions,
                                     cardinality=result.cardinality)
        stub.Finish(matches, timeout=timeout)
        traffic["sent"] += matches.ByteSize()
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise ServiceUnavailable(f"cannot reach party A ({exc.details()}): check its address, that it is "
                                     "serving, and that each party's certificate chains to the other's CA") from None
        raise from_rpc_error(exc) from None
    return PsiOutcome(result.own_indices, result.cardinality, started.server_size, traffic["sent"], traffic["received"])
