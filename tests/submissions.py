"""Hand-built submissions for integration tests: valid ones, and each kind of bad one."""

from __future__ import annotations

import time

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from securefl.services.rpc import from_rpc_error
from securefl.he.codec import encrypt_chunks
from securefl.he.keys import load_public_context
from securefl.identity import Identity, sign_receipt
from securefl.pki import AGGREGATOR, OPERATOR, SITE
from securefl.rounds.chunks import ChunkDigest, chunk_count
from securefl.services.rpc import channel
from securefl.simulation import LocalFederation
from securefl.tensors import flatten
from securefl.v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2


@dataclass
class Submission:
    receipt: common_pb2.Receipt
    chunks: list[bytes]
    chunk_count: int = field(default=-1)

    def messages(self):
        count = len(self.chunks) if self.chunk_count < 0 else self.chunk_count
        yield aggregator_pb2.SubmitMessage(header=aggregator_pb2.SubmissionHeader(receipt=self.receipt, chunk_count=count))
        for index, data in enumerate(self.chunks):
            yield aggregator_pb2.SubmitMessage(chunk=common_pb2.Chunk(index=index, data=data))


class RawAggregator:
    """Talks to the aggregator's stub directly, bypassing the client library's checks. Each
    submission travels over the TLS channel of the site its receipt names (or of `as_site`)."""

    def __init__(self, federation: LocalFederation) -> None:
        self._federation = federation
        self._stubs: dict[tuple[str, str], aggregator_pb2_grpc.AggregatorStub] = {}
        self.stub = self.stub_as(OPERATOR, "operator")
        self.session = self.stub.GetSession(aggregator_pb2.SessionRequest(), wait_for_ready=True, timeout=30)
        self._context = load_public_context(self.session.he_context) if self.session.he_context else None

    def stub_as(self, role: str, party_id: str) -> aggregator_pb2_grpc.AggregatorStub:
        """A stub over a channel authenticated with a certificate naming (role, party_id)."""
        if (role, party_id) not in self._stubs:
            fed = self._federation
            self._stubs[role, party_id] = aggregator_pb2_grpc.AggregatorStub(channel(
                fed.aggregator_address, fed.credentials(role, party_id), server=fed.federation.party(AGGREGATOR),
                insecure=fed.insecure))
        return self._stubs[role, party_id]

    def protect(self, payload: np.ndarray) -> list[bytes]:
        if self._context is None:
            from securefl.rounds.plain import plain_chunks
            return plain_chunks(payload)
        return encrypt_chunks(self._context, payload, self.session.chunk_values)

    def build(self, identity: Identity, update, weight: float, round_id: str,
              tamper: Callable[[Submission, RawAggregator], None] | None = None, sign_after_tamper: bool = True) -> Submission:
        vector, spec = flatten(update)
        payload = np.append(vector * weight, weight)
        chunks = self.protect(payload)
        receipt = common_pb2.Receipt(round_id=round_id, client_id=identity.client_id, scheme=self.session.scheme,
                                     spec_hash=spec.hash, vector_length=payload.size, digest=ChunkDigest.of(chunks))
        submission = Submission(receipt, chunks)
        if tamper is not None and sign_after_tamper:
            tamper(submission, self)
            submission.receipt.digest = ChunkDigest.of(submission.chunks)
        sign_receipt(identity, submission.receipt)
        if tamper is not None and not sign_after_tamper:
            tamper(submission, self)
        return submission

    def submit(self, submission: Submission, as_site: str | None = None) -> aggregator_pb2.SubmitAck:
        stub = self.stub_as(SITE, as_site or submission.receipt.client_id)
        try:
            return stub.Submit(submission.messages(), timeout=30)
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            error.code = exc.code()
            raise error from None

    def open_round(self, round_id: str, min_clients: int, expected_clients: int, timeout_seconds: float = 0.0):
        return self.stub.OpenRound(aggregator_pb2.OpenRoundRequest(
            round_id=round_id, config=aggregator_pb2.RoundConfig(
                min_clients=min_clients, expected_clients=expected_clients, timeout_seconds=timeout_seconds)))

    def round_info(self, round_id: str) -> aggregator_pb2.RoundInfo:
        return self.stub.GetRound(aggregator_pb2.RoundRequest(round_id=round_id))

    def wait_for_contributors(self, round_id: str, count: int, timeout: float = 30.0) -> None:
        """Poll until `count` submissions to the round were acknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.round_info(round_id).contributors >= count:
                    return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # the round opens with its first submission
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {round_id} did not reach {count} contributors")
            time.sleep(0.05)


def expected_chunks(session: aggregator_pb2.Session, length: int) -> int:
    return chunk_count(length, session.chunk_values)
