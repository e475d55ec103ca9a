"""The key-holder: the only holder of the CKKS secret key.

Policy, checked before any decryption and audited either way: at least `min_clients` distinct
enrolled clients, each with a receipt it signed for this round; every receipt agrees on the
round, scheme, model spec and vector length; the aggregate has exactly the ciphertexts that
length needs; the round was never decrypted before (persisted across restarts).

Authentication comes first: `Decrypt` answers only the aggregator's TLS certificate (the
federation's aggregator, not revoked); any other caller, a site's valid certificate included,
gets PERMISSION_DENIED before a byte of its request is read, and the audit log records who
asked, for every decision.

Trade-off: the key-holder cannot check that the aggregate is really the sum of the receipted
submissions without receiving every submission (O(clients × model)); it trusts the aggregator
not to substitute a single client's ciphertext. Threshold decryption or verifiable aggregation
would remove that trust (DESIGN.md, "where this goes next")."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from ..errors import DuplicateSubmission, InvalidInput, PayloadTooLarge, PolicyViolation, SecureFLError
from ..he.codec import decrypt_chunks, parse_chunk
from ..he.keys import SecretContext
from ..federation import Federation
from ..he.aggregation import CKKS
from ..identity import check_identifier, verify_receipt
from ..pki import AGGREGATOR, ROLES
from ..rounds.chunks import chunk_count, chunk_length, float64_chunks
from ..rounds.store import KeyHolderStore
from ..telemetry import NO_RELEASE_METRICS, ReleaseMetrics
from ..v1 import common_pb2, keyholder_pb2, keyholder_pb2_grpc
from .rpc import authorize, caller, translate_errors

log = logging.getLogger(__name__)

MAX_VECTOR_LENGTH = 1 << 28  # 268M values: larger models are refused before any work


class KeyHolderService(keyholder_pb2_grpc.KeyHolderServicer):
    def __init__(self, secret: SecretContext, federation: Federation, store: KeyHolderStore, min_clients: int,
                 metrics: ReleaseMetrics = NO_RELEASE_METRICS) -> None:
        if min_clients < 1:
            raise InvalidInput("min_clients must be at least 1")
        self._secret = secret
        self._federation = federation
        self._roster = federation.roster
        self._store = store
        self._min_clients = min_clients
        self._metrics = metrics

    def register(self, server: grpc.Server) -> None:
        keyholder_pb2_grpc.add_KeyHolderServicer_to_server(self, server)

    @translate_errors
    def GetPublicContext(self, request, context) -> keyholder_pb2.PublicContext:
        authorize(context, self._federation, ROLES, action="fetch the public context")
        return keyholder_pb2.PublicContext(
            context=self._secret.public_bytes, fingerprint=self._secret.fingerprint, preset=self._secret.preset.name
        )

    @translate_errors
    def Decrypt(self, request_iterator, context) -> Iterator[common_pb2.Chunk]:
        asker, round_id = _describe(context), None
        try:
            authorize(context, self._federation, (AGGREGATOR,), self._federation.aggregator.party_id, "decrypt")
            first = next(request_iterator, None)
            if first is None or not first.HasField("header"):
                raise InvalidInput("a decryption request starts with its header")
            header = first.header
            round_id = check_identifier(header.round_id, "round id")
            self._check_policy(header)
            chunks = self._read_chunks(header, request_iterator)
            if not self._store.claim_decryption(round_id):
                raise DuplicateSubmission(f"round {round_id} was already decrypted")
        except SecureFLError as refusal:
            self._store.audit(round_id, "refused", f"{type(refusal).__name__}: {refusal}", asker)
            self._metrics.decryption(False, type(refusal).__name__)
            log.warning("refused to decrypt round %s for %s: %s", round_id, asker, refusal)
            raise
        total = decrypt_chunks(self._secret.context, chunks)
        clients = sorted(r.client_id for r in header.receipts)
        self._store.audit(round_id, "decrypted", f"{len(clients)} contributors: {', '.join(clients)}", asker)
        self._metrics.decryption(True)
        for index, data in enumerate(float64_chunks(total)):
            yield common_pb2.Chunk(index=index, data=data)

    def _check_policy(self, header: keyholder_pb2.DecryptHeader) -> None:
        if not 2 <= header.vector_length <= MAX_VECTOR_LENGTH:
            raise PayloadTooLarge(f"vector length {header.vector_length} is outside [2, {MAX_VECTOR_LENGTH}]")
        clients: set[str] = set()
        for receipt in header.receipts:
            try:
                verify_receipt(self._roster, receipt)
            except SecureFLError as exc:
                raise PolicyViolation(f"receipt of {receipt.client_id!r:.70} is not valid: {exc}") from None
            if (receipt.round_id, receipt.scheme, receipt.spec_hash, receipt.vector_length) != (
                header.round_id, CKKS, header.spec_hash, header.vector_length
            ):
                raise PolicyViolation(f"receipt of {receipt.client_id!r} is for another round, scheme, model or length")
            clients.add(receipt.client_id)
        if len(clients) != len(header.receipts):
            raise PolicyViolation("receipts name the same client more than once")
        if len(clients) < self._min_clients:
            raise PolicyViolation(
                f"{len(clients)} distinct contributors; policy requires at least {self._min_clients}"
            )

    def _read_chunks(self, header: keyholder_pb2.DecryptHeader, request_iterator) -> list:
        slots = self._secret.preset.slots
        expected = chunk_count(header.vector_length, slots)
        if header.chunk_count != expected:
            raise InvalidInput(f"{header.chunk_count} ciphertexts announced; length {header.vector_length} needs {expected}")
        chunks = []
        for message in request_iterator:
            index = len(chunks)
            if not message.HasField("chunk") or message.chunk.index != index or index >= expected:
                raise InvalidInput(f"expected ciphertext chunk {index} of {expected}")
            chunks.append(parse_chunk(
                self._secret.context, self._secret.preset, message.chunk.data,
                chunk_length(index, header.vector_length, slots),
            ))
        if len(chunks) != expected:
            raise InvalidInput(f"stream ended after {len(chunks)} of {expected} ciphertexts")
        return chunks


def _describe(context) -> str:
    """Who asked, for the audit log: the certificate's party, or what is known without one."""
    try:
        peer = caller(context)
    except SecureFLError:
        return f"unauthenticated {context.peer()}"
    return f"{peer} (certificate {peer.serial:x})" if peer is not None else f"plaintext {context.peer()}"
