"""The key-holder's gRPC service: a thin transport over `securefl.he.release.KeyHolderCore`
and its keystore, where every rule lives (which rounds, which receipts, which ciphertexts, what
is released, when keys rotate).

Authentication comes first: `RegisterRound` and `Decrypt` answer only the aggregator's TLS
certificate (the federation's aggregator, not revoked); any other caller, a site's valid
certificate included, gets PERMISSION_DENIED before a byte of its request is read, and a refused
`Decrypt` is audited with who asked. `GetEpoch` (public: the signed public half of the current
epoch) answers any enrolled party."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from ..errors import InvalidInput, SecureFLError
from ..federation import Federation
from ..he.release import AuditLog, KeyHolderCore
from ..pki import AGGREGATOR, ROLES
from ..rounds.chunks import float64_chunks
from ..telemetry import NO_RELEASE_METRICS, ReleaseMetrics
from ..v1 import common_pb2, keyholder_pb2, keyholder_pb2_grpc
from .rpc import authorize, caller, translate_errors

log = logging.getLogger(__name__)


class KeyHolderService(keyholder_pb2_grpc.KeyHolderServicer):
    def __init__(self, core: KeyHolderCore, federation: Federation, audit: AuditLog,
                 metrics: ReleaseMetrics = NO_RELEASE_METRICS) -> None:
        """`metrics` counts the refusals made here (authorization, framing); the core counts its own."""
        self._core = core
        self._federation = federation
        self._audit = audit
        self._metrics = metrics

    def register(self, server: grpc.Server) -> None:
        keyholder_pb2_grpc.add_KeyHolderServicer_to_server(self, server)

    def _aggregator(self, context: grpc.ServicerContext, action: str) -> None:
        authorize(context, self._federation, (AGGREGATOR,), self._federation.aggregator.party_id, action)

    @translate_errors
    def GetEpoch(self, request, context) -> common_pb2.PublicEpoch:
        authorize(context, self._federation, ROLES, action="fetch the key epoch")
        return self._core.current_epoch()

    @translate_errors
    def RegisterRound(self, request, context) -> common_pb2.PublicEpoch:
        self._aggregator(context, "register rounds")
        return self._core.public_epoch_for_round(request.round_id)

    @translate_errors
    def Decrypt(self, request_iterator, context) -> Iterator[common_pb2.Chunk]:
        requester = _describe(context)
        try:
            self._aggregator(context, "decrypt")
            first = next(request_iterator, None)
            if first is None or not first.HasField("header"):
                raise InvalidInput("a decryption request starts with its header")
        except SecureFLError as refusal:
            self._audit.audit(None, "refused", f"{type(refusal).__name__}: {refusal}", requester)
            self._metrics.decryption(False, type(refusal).__name__)
            raise
        header = first.header
        total = self._core.release(header.round_id, header.vector_length, header.spec_hash, list(header.receipts),
                                   _chunks(header, request_iterator), requester)
        for index, data in enumerate(float64_chunks(total)):
            yield common_pb2.Chunk(index=index, data=data)


def _chunks(header: keyholder_pb2.DecryptHeader, request_iterator) -> Iterator[bytes]:
    """The ciphertexts of a decryption stream, in order, as the core reads them: a stream that
    skips or repeats an index or sends more than it announced raises inside the core's checks
    (audited, nothing decrypted). gRPC bounds each message; the core, how many it reads."""
    count = 0
    for message in request_iterator:
        if not message.HasField("chunk") or message.chunk.index != count or count >= header.chunk_count:
            raise InvalidInput(f"expected ciphertext chunk {count} of {header.chunk_count}")
        count += 1
        yield message.chunk.data
    if count != header.chunk_count:
        raise InvalidInput(f"stream ended after {count} of {header.chunk_count} ciphertexts")


def _describe(context: grpc.ServicerContext) -> str:
    """Who asked, for the audit log: the certificate's party, or what is known without one."""
    try:
        peer = caller(context)
    except SecureFLError:
        return f"unauthenticated {context.peer()}"
    return f"{peer} (certificate {peer.serial:x})" if peer is not None else f"plaintext {context.peer()}"
