"""gRPC plumbing shared by every service: error translation, server start-up, channels, and
the authenticated caller of a call.

Security: servers and channels use mutual TLS (`require_client_auth=True`: a caller without a
certificate of the federation's CA never completes the handshake). Plaintext exists only when
the operator asks for it explicitly (`insecure=True`, the `--insecure` flag), and is then logged
as a warning at every start. A client checks the server's certificate against the securefl name
of the party it means to reach, so another party of the same CA cannot pose as the aggregator or
the key-holder. A server learns who calls from the peer certificate (`caller`), and services
authorize on that (`authorize`), never on an id a request carries."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from cryptography import x509

from ..errors import (
    InvalidInput, PermissionDenied, SecureFLError, ServiceUnavailable, Unauthenticated, error_named,
)
from ..federation import Federation
from ..pki import PartyName, party_of
from ..tls import TlsConfig
from ..v1 import common_pb2
from .health import Health

log = logging.getLogger(__name__)
M = TypeVar("M")

ERROR_METADATA_KEY = "securefl-error"  # the error's class name, so the caller re-raises the same type

# Every payload is streamed in chunks far below this; larger messages are refused by gRPC
# with RESOURCE_EXHAUSTED before they reach a handler.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
RUN_BYTES = 1 << 20  # chunks per streamed message, at most (`chunk_runs`)
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_reconnect_backoff_ms", 5000),  # a restarted server is found again within seconds
]


def _abort(context: grpc.ServicerContext, error: SecureFLError) -> None:
    context.set_trailing_metadata(((ERROR_METADATA_KEY, type(error).__name__),))
    context.abort(grpc.StatusCode[error.status], str(error))


def translate_errors(method: Callable) -> Callable:
    """Turn a SecureFLError raised by a servicer method into its gRPC status; log and hide
    anything unexpected behind INTERNAL."""

    def handle(exc: Exception, context: grpc.ServicerContext) -> None:
        if isinstance(exc, SecureFLError):
            level = logging.WARNING if exc.status in ("PERMISSION_DENIED", "UNAUTHENTICATED") else logging.DEBUG
            log.log(level, "%s refused (%s): %s", method.__name__, type(exc).__name__, exc)
            _abort(context, exc)
        log.exception("unexpected error in %s", method.__name__)
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext):
            try:
                yield from method(self, request, context)
            except Exception as exc:
                handle(exc, context)
        return stream_wrapper

    @functools.wraps(method)
    def unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except Exception as exc:
            handle(exc, context)
    return unary_wrapper


_PLAINTEXT_REFUSED = ("refusing plaintext gRPC: give TLS material (--tls-cert, --tls-key, --tls-ca; tls= in Python) "
                      "or pass --insecure (insecure=True) explicitly")


def start_server(register: Callable[[grpc.Server], None], host: str, port: int, workers: int = 32, *,
                 tls: TlsConfig | None = None, insecure: bool = False,
                 health: Health | None = None, options: list[tuple[str, Any]] | None = None) -> tuple[grpc.Server, int]:
    """Start a server with modest limits (and any further channel `options`); returns it and
    the bound port (port 0 picks one). Mutual TLS with `tls`; plaintext only with
    `insecure=True`. `health` (NOT_SERVING until its owner says otherwise) is served beside the
    service."""
    if tls is None and not insecure:
        raise InvalidInput(_PLAINTEXT_REFUSED)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=_OPTIONS + (options or []))
    register(server)
    if health is not None:
        health.register(server)
    try:
        if tls is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            credentials = grpc.ssl_server_credentials([(tls.private_key, tls.certificate)], root_certificates=tls.ca,
                                                      require_client_auth=True)
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:  # grpcio >= 1.70 raises where older releases returned 0
        bound = 0
    if bound == 0:
        raise ServiceUnavailable(f"cannot listen on {host}:{port}: the address is in use or not this host's")
    if tls is None:
        log.warning("INSECURE: serving plaintext gRPC on %s:%d (--insecure); anyone on the network can read and "
                    "forge this traffic", host, bound)
    server.start()
    return server, bound


def chunk_message(message_type: type[M], index: int, data: bytes) -> M:
    """A streamed message carrying one chunk. Built from a dict: with upb, passing a `Chunk`
    object copies its bytes through a slow path (2-5 ms per MiB against 0.05 ms), which made
    building messages the largest cost of streaming."""
    return message_type(chunk={"index": index, "data": data})


def chunk_runs(message_type: type[M], chunks: Sequence[bytes], run_bytes: int = RUN_BYTES) -> Iterator[M]:
    """Streamed messages carrying `chunks` in order, consecutive ones together up to
    `run_bytes` per message (a chunk larger than that travels alone)."""
    start = 0
    while start < len(chunks):
        end, size = start + 1, len(chunks[start])
        while end < len(chunks) and size + len(chunks[end]) <= run_bytes:
            size += len(chunks[end])
            end += 1
        yield message_type(chunks={"first_index": start, "data": chunks[start:end]})
        start = end


def run_chunks(run: common_pb2.ChunkRun) -> Iterator[tuple[int, bytes]]:
    """The (index, data) pairs a run carries."""
    for offset, data in enumerate(run.data):
        yield run.first_index + offset, data


def channel(address: str, tls: TlsConfig | None = None, *, server: PartyName | None = None,
            insecure: bool = False) -> grpc.Channel:
    """A channel to `address`: mutual TLS with `tls`, checking that the server's certificate
    names `server` (or `tls.server_name`); plaintext only with `insecure=True`."""
    if tls is None:
        if not insecure:
            raise InvalidInput(_PLAINTEXT_REFUSED)
        return grpc.insecure_channel(address, options=_OPTIONS)
    credentials = grpc.ssl_channel_credentials(tls.ca, tls.private_key, tls.certificate)
    name = tls.server_name or (server.dns_name if server is not None else None)
    options = _OPTIONS + ([("grpc.ssl_target_name_override", name)] if name else [])
    return grpc.secure_channel(address, credentials, options=options)


def from_rpc_error(error: grpc.RpcError) -> SecureFLError:
    """Rebuild the securefl error a server raised, from a failed call."""
    name = dict(error.trailing_metadata() or ()).get(ERROR_METADATA_KEY)
    default = ServiceUnavailable if error.code() == grpc.StatusCode.UNAVAILABLE else SecureFLError
    return error_named(name, error.details() or str(error.code()), default)


def raised_by_server(error: grpc.RpcError) -> bool:
    """Whether a failed call carries a securefl error the server raised (a QuorumTimeout is
    DEADLINE_EXCEEDED too), rather than a failure of the transport or of the call's deadline."""
    return ERROR_METADATA_KEY in dict(error.trailing_metadata() or ())


def invoke(method: Callable, request: Any, **kwargs: Any) -> Any:
    """Call an RPC; a failure comes back as the securefl error the server raised."""
    try:
        return method(request, **kwargs)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


# -- who is calling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A caller authenticated by its TLS certificate."""

    party: PartyName
    serial: int

    def __str__(self) -> str:
        return str(self.party)


@functools.lru_cache(maxsize=4096)
def _peer_of_certificate(pem: bytes) -> Peer:
    certificate = x509.load_pem_x509_certificate(pem)
    return Peer(party_of(certificate), certificate.serial_number)


def caller(context: grpc.ServicerContext) -> Peer | None:
    """The TLS-authenticated caller of this call, or None on a plaintext server (which exists
    only when its operator passed --insecure: a TLS server requires a client certificate)."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    certificates = auth.get("x509_pem_cert")
    if not certificates:
        raise Unauthenticated("no client certificate: this service requires mutual TLS")
    try:
        return _peer_of_certificate(certificates[0])
    except (InvalidInput, ValueError) as exc:
        raise Unauthenticated(f"the client certificate names no securefl party: {exc}") from None


def authorize(context: grpc.ServicerContext, federation: Federation | None, roles: tuple[str, ...],
              party_id: str | None = None, action: str = "call this service") -> Peer | None:
    """The caller, if it holds one of `roles` (and is `party_id`, when given), is enrolled in
    `federation` and its certificate is not revoked; PermissionDenied otherwise. None on a
    plaintext server (--insecure: nobody is authenticated)."""
    peer = caller(context)
    if peer is None:
        return None
    if peer.party.role not in roles or (party_id is not None and peer.party.party_id != party_id):
        wanted = f"{roles[0]} {party_id}" if party_id is not None else " or ".join(roles)
        raise PermissionDenied(f"{peer} may not {action}: only the {wanted} may")
    if federation is not None:
        federation.check_peer(peer.party, peer.serial)
    return peer
