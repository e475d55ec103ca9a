"""Hand-built submissions for integration tests: valid ones, and each kind of bad one."""

from __future__ import annotations

import time

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from securefl.services.rpc import from_rpc_error
from securefl.he.epochs import EpochVerifier, VerifiedEpoch, protect_update
from securefl.identity import Identity, sign_receipt
from securefl.pki import AGGREGATOR, OPERATOR, SITE
from securefl.rounds.chunks import ChunkDigest, chunk_count
from securefl.rounds.scheme import SUBMIT
from securefl.services.rpc import channel, chunk_runs
from securefl.simulation import LocalFederation
from securefl.tensors import flatten
from securefl.v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2


@dataclass
class Submission:
    receipt: common_pb2.Receipt
    chunks: list[bytes]
    chunk_count: int = field(default=-1)
    runs: list[tuple[int, list[bytes]]] | None = None  # (first index, chunks) per message; None: as a client sends

    def messages(self):
        count = len(self.chunks) if self.chunk_count < 0 else self.chunk_count
        yield aggregator_pb2.SubmitMessage(header=aggregator_pb2.SubmissionHeader(receipt=self.receipt, chunk_count=count))
        if self.runs is None:
            yield from chunk_runs(aggregator_pb2.SubmitMessage, self.chunks)
        for first, data in self.runs or []:
            yield aggregator_pb2.SubmitMessage(chunks={"first_index": first, "data": data})


class RawAggregator:
    """Talks to the aggregator's stub directly, bypassing the client library's checks. Each
    submission travels over the TLS channel of the site its receipt names (or of `as_site`).
    HE submissions are protected under the round's key epoch, fetched as the first site."""

    def __init__(self, federation: LocalFederation) -> None:
        self._federation = federation
        self._stubs: dict[tuple[str, str], aggregator_pb2_grpc.AggregatorStub] = {}
        self._epochs: dict[str, VerifiedEpoch] = {}
        self.stub = self.stub_as(OPERATOR, "operator")
        self.session = self.stub.GetSession(aggregator_pb2.SessionRequest(), wait_for_ready=True, timeout=30)
        keyholder = federation.federation.keyholder
        self._verifier = EpochVerifier(keyholder.public_key) if keyholder is not None else None

    def stub_as(self, role: str, party_id: str) -> aggregator_pb2_grpc.AggregatorStub:
        """A stub over a channel authenticated with a certificate naming (role, party_id)."""
        if (role, party_id) not in self._stubs:
            fed = self._federation
            self._stubs[role, party_id] = aggregator_pb2_grpc.AggregatorStub(channel(
                fed.aggregator_address, fed.credentials(role, party_id), server=fed.federation.party(AGGREGATOR),
                insecure=fed.insecure))
        return self._stubs[role, party_id]

    def round_epoch(self, round_id: str) -> VerifiedEpoch:
        """The key epoch the aggregator hands the round's sites (joining as the first site)."""
        if round_id not in self._epochs:
            site = self._federation.identities[0].client_id
            stub = self.stub_as(SITE, site)
            stub.JoinRound(aggregator_pb2.JoinRoundRequest(client_id=site, round_id=round_id), timeout=30)
            stage = stub.AwaitStage(aggregator_pb2.StageRequest(round_id=round_id, client_id=site), timeout=30)
            if stage.stage == SUBMIT:
                self._epochs[round_id] = self._verifier.verify(common_pb2.PublicEpoch.FromString(stage.body))
            else:  # the round has ended: any valid epoch makes a submission it must refuse
                key = self._federation.federation.keyholder.public_key
                self._epochs[round_id] = EpochVerifier(key).verify(self.session.he_epoch)
        return self._epochs[round_id]

    def protect(self, identity: Identity, vector: np.ndarray, weight: float,
                round_id: str) -> tuple[list[bytes], common_pb2.Receipt]:
        """The protected chunks and the scheme's receipt fields, as an honest client makes them."""
        if self._verifier is None:
            from securefl.rounds.plain import plain_chunks
            payload = np.append(vector * weight, weight)
            return plain_chunks(payload, self.session.chunk_values), common_pb2.Receipt(vector_length=payload.size)
        update = protect_update(self.round_epoch(round_id), round_id, identity.client_id, vector, weight)
        return update.chunks, common_pb2.Receipt(vector_length=update.vector_length, key_epoch=update.key_epoch,
                                                 sealed_seed=update.sealed_seed)

    def build(self, identity: Identity, update, weight: float, round_id: str,
              tamper: Callable[[Submission, RawAggregator], None] | None = None, sign_after_tamper: bool = True) -> Submission:
        vector, spec = flatten(update)
        chunks, receipt = self.protect(identity, vector, weight, round_id)
        receipt.round_id, receipt.client_id, receipt.scheme = round_id, identity.client_id, self.session.scheme
        receipt.spec_hash, receipt.digest = spec.hash, ChunkDigest.of(chunks)
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

    def open_round(self, round_id: str, min_clients: int, expected_clients: int, timeout_seconds: float = 0.0,
                   vector_length: int = 0):
        return self.stub.OpenRound(aggregator_pb2.OpenRoundRequest(
            round_id=round_id, config=aggregator_pb2.RoundConfig(
                min_clients=min_clients, expected_clients=expected_clients, timeout_seconds=timeout_seconds,
                vector_length=vector_length)))

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
