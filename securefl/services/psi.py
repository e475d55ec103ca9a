"""PSI over gRPC: party A's servicer and party B's driver. The protocol and every rule of a
session live in securefl.psi.protocol; this module moves its messages and tells it who called.

Who called comes from a `PeerOf` function reading the call's authenticated transport: the
client certificate of a mutual-TLS connection (`tls_peer`), or a Unix socket in a private
directory for both parties in one process (`local_peer`). The service authorizes that peer
before it reads a single request message."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ..errors import InvalidInput, ServiceUnavailable, from_rpc_error
from ..psi.protocol import JoinerParty, PsiOutcome, ServerParty
from ..v1 import psi_pb2, psi_pb2_grpc
from .rpc import translate_errors

PeerOf = Callable[[grpc.ServicerContext], "str | None"]
LOCAL_PEER = "local"


def tls_peer(context: grpc.ServicerContext) -> str | None:
    """The common name of the client certificate that mutual TLS verified for this call, or
    None on a connection without a verified client certificate."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if len(names) == 1 else None


def mutual_tls(cert: Path, key: Path, ca: Path) -> tuple[grpc.ServerCredentials, grpc.ChannelCredentials]:
    """Mutual-TLS credentials from PEM files: this party's certificate and key, and the CA the
    peer's certificate must chain to. The server requires and verifies a client certificate,
    so `tls_peer` always has an authenticated name; the channel verifies the server's."""
    cert_pem = _read_pem(cert, "certificate", x509.load_pem_x509_certificate)
    key_pem = _read_pem(key, "unencrypted private key", lambda data: load_pem_private_key(data, password=None))
    ca_pem = _read_pem(ca, "CA certificate", x509.load_pem_x509_certificate)
    return (grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True),
            grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem))


def _read_pem(path: Path, what: str, parse: Callable[[bytes], object]) -> bytes:
    try:
        data = path.read_bytes()
        parse(data)
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise InvalidInput(f"{path} is not a PEM {what}") from None
    return data


def local_peer(context: grpc.ServicerContext) -> str | None:
    """LOCAL_PEER for a call over a Unix socket with local credentials (only processes that can
    open the socket's private directory can connect), None otherwise."""
    local = context.auth_context().get("transport_security_type") == [b"local"]
    return LOCAL_PEER if local and context.peer().startswith("unix:") else None


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
