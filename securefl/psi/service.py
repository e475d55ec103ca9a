"""PSI over gRPC: party A's servicer and party B's driver, over mutual TLS.

Party A answers only callers with a certificate of the CA it trusts (and, with `peer`, only
that party); party B checks that A's certificate names the party it means to reach."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from ..errors import InvalidInput
from ..pki import ROLES, PartyName
from ..services.rpc import authorize, channel, from_rpc_error, translate_errors
from ..tls import TlsConfig
from ..v1 import psi_pb2, psi_pb2_grpc
from .group import POINT_BYTES, GroupPool, batched, hash_and_blind, new_scalar, blind
from .hashing import session_dst
from .protocol import MAX_SET_SIZE, PsiOutcome, ServerParty


class PsiService(psi_pb2_grpc.PsiServicer):
    """Party A. `on_finish` receives each finished session's outcome; `peer`, when given, is
    the only party id allowed to join."""

    def __init__(self, party: ServerParty, on_finish: Callable[[PsiOutcome], None] | None = None,
                 peer: str | None = None) -> None:
        self.party = party
        self._on_finish = on_finish
        self._peer = peer

    def _authorize(self, context) -> None:
        authorize(context, None, ROLES, self._peer, "join this PSI session")

    def register(self, server: grpc.Server) -> None:
        psi_pb2_grpc.add_PsiServicer_to_server(self, server)

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


def join(address: str, ids: list[bytes], pool: GroupPool, cardinality_only: bool = False, timeout: float = 3600, *,
         tls: TlsConfig | None = None, server: PartyName | None = None, insecure: bool = False) -> PsiOutcome:
    """Party B: run one session against the PSI service at `address`, whose certificate must
    name `server`."""
    psi_channel = channel(address, tls, server=server, insecure=insecure)
    stub = psi_pb2_grpc.PsiStub(psi_channel)
    try:
        session = stub.Start(psi_pb2.PsiStart(joiner_size=len(ids), cardinality_only=cardinality_only),
                             timeout=timeout, wait_for_ready=True)
        if not 0 < session.server_size <= MAX_SET_SIZE or len(session.session_id) != 16:
            raise InvalidInput("the serving party announced an invalid session")
        scalar, dst = new_scalar(), session_dst(session.session_id)
        traffic = {"sent": 0, "received": 0}

        def my_points() -> Iterator[psi_pb2.PointBatch]:
            for points in pool.ordered_map(hash_and_blind, batched(ids), dst, scalar):
                message = psi_pb2.PointBatch(session_id=session.session_id, points=points)
                traffic["sent"] += message.ByteSize()
                yield message

        def received(stream) -> Iterator[bytes]:
            for message in stream:
                traffic["received"] += message.ByteSize()
                yield message.points

        own_doubled = b"".join(received(stub.BlindJoinerPoints(my_points(), timeout=timeout)))
        if len(own_doubled) != POINT_BYTES * len(ids):
            raise InvalidInput(f"the serving party returned {len(own_doubled) // POINT_BYTES} points for {len(ids)}")
        server_stream = received(stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=session.session_id), timeout=timeout))
        server_doubled = _checked_count(pool.ordered_map(blind, server_stream, scalar), session.server_size)
        own_indices, server_positions = _match(own_doubled, server_doubled)
        if cardinality_only:
            own_indices, server_positions = [], []
            cardinality = _count_matches(own_doubled, server_doubled)
        else:
            cardinality = len(own_indices)
        matches = psi_pb2.PsiMatches(session_id=session.session_id, server_positions=server_positions,
                                     cardinality=cardinality)
        stub.Finish(matches, timeout=timeout)
        traffic["sent"] += matches.ByteSize()
        return PsiOutcome(own_indices, cardinality, session.server_size, traffic["sent"], traffic["received"])
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
    finally:
        psi_channel.close()


def _checked_count(batches: Iterator[bytes], expected: int) -> dict[bytes, int]:
    """A's doubly blinded points -> their position; refuses a wrong count or duplicates."""
    positions: dict[bytes, int] = {}
    received = 0
    for data in batches:
        for offset in range(0, len(data), POINT_BYTES):
            positions[data[offset:offset + POINT_BYTES]] = received
            received += 1
    if received != expected:
        raise InvalidInput(f"the serving party sent {received} points, not the {expected} it announced")
    if len(positions) != received:
        raise InvalidInput("the serving party sent the same point twice")
    return positions


def _match(own_doubled: bytes, server_positions: dict[bytes, int]) -> tuple[list[int], list[int]]:
    """B's indices and A's positions of the intersection, ordered by the doubly blinded value
    (which both parties can compute for a matched item)."""
    matches = sorted(
        (own_doubled[o:o + POINT_BYTES], o // POINT_BYTES)
        for o in range(0, len(own_doubled), POINT_BYTES)
        if own_doubled[o:o + POINT_BYTES] in server_positions
    )
    return [index for _, index in matches], [server_positions[point] for point, _ in matches]


def _count_matches(own_doubled: bytes, server_positions: dict[bytes, int]) -> int:
    return sum(own_doubled[o:o + POINT_BYTES] in server_positions for o in range(0, len(own_doubled), POINT_BYTES))
