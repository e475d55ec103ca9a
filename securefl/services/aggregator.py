"""The untrusted aggregator's gRPC service.

It relays the key-holder's public context, takes streamed submissions and adds them into the
round's running sum, and publishes each round's weighted average. It never holds the CKKS
secret key nor a plaintext update; it sees only the revealed aggregate."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc

from ..errors import (
    InvalidInput, LengthMismatch, PayloadTooLarge, RoundClosed, SpecMismatch, UnknownClient, VerificationFailed,
)
from ..masking.server import ADVERTISE, SHARE, UNMASK
from ..federation import Federation
from ..identity import Identity, ack_message, check_identifier, verify_receipt
from ..pki import SITE
from ..schemes import SECAGG, AggregationScheme, ChunkDigest, chunk_count, chunk_length, float64_chunks
from ..v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2
from .rounds import FAILED, OPEN, Round, RoundConfig, RoundManager
from .rpc import authorize, translate_errors

log = logging.getLogger(__name__)

MAX_VECTOR_LENGTH = 1 << 28  # larger models are refused before any work
MAX_CHUNK_BYTES = 1 << 20


class AggregatorService(aggregator_pb2_grpc.AggregatorServicer):
    def __init__(self, scheme: AggregationScheme, rounds: RoundManager, federation: Federation,
                 session: aggregator_pb2.Session, signer: Identity) -> None:
        """`signer` is the aggregator's long-term identity, pinned by clients in federation.json:
        its signature on an acknowledgement is what a client can hold against it."""
        self._scheme = scheme
        self._rounds = rounds
        self._federation = federation
        self._roster = federation.roster
        self._session = session
        self._signer = signer

    def register(self, server: grpc.Server) -> None:
        aggregator_pb2_grpc.add_AggregatorServicer_to_server(self, server)

    @translate_errors
    def GetSession(self, request, context) -> aggregator_pb2.Session:
        return self._session

    @translate_errors
    def OpenRound(self, request, context) -> aggregator_pb2.RoundInfo:
        config = None
        if request.HasField("config"):
            c = request.config
            config = RoundConfig(c.min_clients, c.expected_clients, c.timeout_seconds)
        return _round_info(self._rounds.open_round(request.round_id or None, config))

    @translate_errors
    def JoinRound(self, request, context) -> aggregator_pb2.RoundInfo:
        client_id = check_identifier(request.client_id, "client id")
        if client_id not in self._roster:
            raise UnknownClient(f"client {client_id!r} is not enrolled")
        return _round_info(self._rounds.join(client_id))

    @translate_errors
    def GetRound(self, request, context) -> aggregator_pb2.RoundInfo:
        return _round_info(self._rounds.get(request.round_id))

    @translate_errors
    def Submit(self, request_iterator, context) -> aggregator_pb2.SubmitAck:
        authorize(context, self._federation, (SITE,), action="submit")
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidInput("a submission starts with its header")
        receipt, announced = first.header.receipt, first.header.chunk_count
        # The TLS peer and the signed receipt must name the same site.
        authorize(context, self._federation, (SITE,), receipt.client_id, f"submit for {receipt.client_id!r:.70}")
        verify_receipt(self._roster, receipt)
        if receipt.scheme != self._scheme.name:
            raise SpecMismatch(f"this aggregator runs scheme {self._scheme.name!r}, not {receipt.scheme!r:.40}")
        if not 2 <= receipt.vector_length <= MAX_VECTOR_LENGTH:
            raise PayloadTooLarge(f"vector length {receipt.vector_length} is outside [2, {MAX_VECTOR_LENGTH}]")
        expected = chunk_count(receipt.vector_length, self._scheme.chunk_values)
        if announced != expected:
            raise LengthMismatch(f"{announced} chunks announced; length {receipt.vector_length} needs {expected}")
        round_ = self._rounds.for_submission(receipt.round_id)
        round_.check_accepts(receipt)  # fail fast; checked again under the round's lock
        raw, parsed, validation_seconds = self._read_chunks(request_iterator, receipt.vector_length, expected,
                                                            receipt.digest)
        contributors = self._rounds.accept(round_, receipt, raw, parsed, validation_seconds)
        log.info("round %s: accepted %s (%d contributors)", round_.round_id, receipt.client_id, contributors)
        return aggregator_pb2.SubmitAck(
            round_id=round_.round_id, client_id=receipt.client_id, contributors=contributors,
            aggregator_key=self._signer.public_bytes, aggregator_signature=self._signer.sign(ack_message(receipt)),
        )

    def _read_chunks(self, request_iterator, vector_length: int, expected: int,
                     signed_digest: bytes) -> tuple[list[bytes], list, float]:
        """Read and validate every chunk; nothing touches the round until all have passed.
        Also returns the time spent validating (not waiting for the network)."""
        digest = ChunkDigest()
        validation_seconds = 0.0
        raw: list[bytes] = []
        parsed = []
        for message in request_iterator:
            index = len(raw)
            if not message.HasField("chunk") or message.chunk.index != index or index >= expected:
                raise InvalidInput(f"expected chunk {index} of {expected}")
            data = message.chunk.data
            if len(data) > MAX_CHUNK_BYTES:
                raise PayloadTooLarge(f"chunk {index} has {len(data)} bytes; the limit is {MAX_CHUNK_BYTES}")
            started = time.perf_counter()
            digest.update(index, data)
            parsed.append(self._scheme.parse_chunk(index, data, chunk_length(index, vector_length, self._scheme.chunk_values)))
            validation_seconds += time.perf_counter() - started
            raw.append(data)
        if len(raw) != expected:
            raise InvalidInput(f"stream ended after {len(raw)} of {expected} chunks; nothing was added")
        if digest.digest() != signed_digest:
            raise VerificationFailed("chunks do not match the signed digest")
        return raw, parsed, validation_seconds

    # -- SecAgg+ stages ------------------------------------------------------------------

    def _secagg(self):
        if self._scheme.name != SECAGG:
            raise SpecMismatch(f"this aggregator runs scheme {self._scheme.name!r}; secure-aggregation stages do not apply")
        return self._scheme

    def _await_stage(self, wait, request, context):
        """Block until the stage `wait` waits for is over; give up if the round fails or the
        caller leaves."""
        round_ = self._rounds.get(request.round_id)
        while True:
            answer = wait(round_.round_id, request.client_id, 0.5)
            if answer is not None:
                return answer
            if round_.state == FAILED:
                raise round_.error()
            if not context.is_active():
                raise RoundClosed("caller left")

    @translate_errors
    def AdvertiseKeys(self, request, context) -> aggregator_pb2.StageAck:
        scheme = self._secagg()
        round_ = self._rounds.for_submission(request.round_id)
        if round_.state != OPEN:
            raise RoundClosed(f"round {round_.round_id} is {round_.state}")
        scheme.open(round_.round_id, round_.config.expected_clients)
        scheme.advertise(request)
        return aggregator_pb2.StageAck(stage=ADVERTISE)

    @translate_errors
    def AwaitParticipants(self, request, context) -> aggregator_pb2.Participants:
        return self._await_stage(self._secagg().participants, request, context)

    @translate_errors
    def ShareKeys(self, request, context) -> aggregator_pb2.StageAck:
        self._secagg().share_keys(request)
        return aggregator_pb2.StageAck(stage=SHARE)

    @translate_errors
    def AwaitShares(self, request, context) -> aggregator_pb2.IncomingShares:
        return self._await_stage(self._secagg().incoming_shares, request, context)

    @translate_errors
    def AwaitUnmask(self, request, context) -> aggregator_pb2.UnmaskRequest:
        return self._await_stage(self._secagg().unmask_request, request, context)

    @translate_errors
    def Unmask(self, request, context) -> aggregator_pb2.StageAck:
        self._secagg().unmask(request)
        return aggregator_pb2.StageAck(stage=UNMASK)

    @translate_errors
    def AwaitResult(self, request, context) -> Iterator[aggregator_pb2.ResultMessage]:
        round_ = self._rounds.get(request.round_id)
        while not self._rounds.wait(round_, timeout=0.5):
            if not context.is_active():
                return
        average = self._rounds.result(round_)
        chunks = float64_chunks(average)
        yield aggregator_pb2.ResultMessage(header=aggregator_pb2.ResultHeader(
            round_id=round_.round_id, vector_length=average.size, total_weight=round_.record.total_weight or 0.0,
            contributors=round_.record.contributors or 0, chunk_count=len(chunks),
        ))
        for index, data in enumerate(chunks):
            yield aggregator_pb2.ResultMessage(chunk=common_pb2.Chunk(index=index, data=data))


def _round_info(round_: Round) -> aggregator_pb2.RoundInfo:
    record = round_.record
    return aggregator_pb2.RoundInfo(
        round_id=record.round_id, state=record.state,
        config=aggregator_pb2.RoundConfig(min_clients=record.min_clients, expected_clients=record.expected_clients,
                                          timeout_seconds=record.timeout_seconds),
        contributors=len(round_.receipts) if record.contributors is None else record.contributors,
        vector_length=record.vector_length or 0, spec_hash=record.spec_hash or b"", error=record.error_message or "",
        aggregation_seconds=round_.aggregation_seconds, reveal_seconds=round_.reveal_seconds,
    )
