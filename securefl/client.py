"""The client library a site's training loop calls, over gRPC.

    client = securefl.connect("aggregator:7000", identity=identity, federation=federation, tls=tls,
                              keyholder_fingerprint=pin)
    averaged = client.aggregate(model.state_dict(), weight=n_samples)

Security: the update is scaled by its weight and protected by the aggregator's scheme (its
client half, `securefl.schemes.client_scheme`) before it leaves this process; only the weighted
average of a round comes back. What the site trusts comes from its pins, never from the
aggregator: the federation file (the roster, the aggregator's key — every acknowledgement is
checked against it — and the security parameters) and, for ckks, the key-holder's fingerprint;
a scheme whose session does not match the pins is refused. The channel is mutual TLS, and the
server must hold the aggregator's certificate.

Large CKKS updates are encrypted on a pool of worker processes started with `spawn`; as with
any Python multiprocessing, a script that calls `aggregate` must guard its entry point with
`if __name__ == "__main__":`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from .errors import InvalidInput, SecureFLError, ServiceUnavailable, VerificationFailed
from .federation import Federation
from .identity import Identity, ack_message
from .pki import AGGREGATOR, SITE, PartyName
from .rounds.chunks import join_float64
from .rounds.scheme import DONE, SUBMIT, ClientRound, ClientScheme, Protected, Stage, signed_receipt
from .schemes import ClientPins, client_scheme
from .services.rpc import channel, from_rpc_error, invoke
from .tensors import check_weight, flatten, unflatten
from .tls import TlsConfig
from .v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2


class SimulatedDropout(Exception):
    """Raised inside a client told to drop out before a stage (simulations and tests only)."""


@dataclass
class RoundStats:
    """What one aggregate() call cost this client."""

    round_id: str
    protect_seconds: float
    upload_seconds: float
    wait_seconds: float
    bytes_sent: int
    values: int
    stage_seconds: dict[str, float] = field(default_factory=dict)  # local work per stage, no waiting


class Client:
    def __init__(self, address: str, identity: Identity, federation: Federation,
                 keyholder_fingerprint: bytes | str | None = None, tls: TlsConfig | None = None,
                 insecure: bool = False, allow_plain: bool = False) -> None:
        if tls is not None and tls.party != PartyName(SITE, identity.client_id):
            raise InvalidInput(f"the TLS certificate names {tls.party}, not site {identity.client_id}")
        self.identity = identity
        self.federation = federation
        pin = bytes.fromhex(keyholder_fingerprint) if isinstance(keyholder_fingerprint, str) else keyholder_fingerprint
        self._pins = ClientPins(federation=federation, keyholder_fingerprint=pin, allow_plain=allow_plain)
        self._channel = channel(address, tls, server=PartyName(AGGREGATOR, federation.aggregator.party_id),
                                insecure=insecure)
        self._stub = aggregator_pb2_grpc.AggregatorStub(self._channel)
        self._session: aggregator_pb2.Session | None = None
        self._scheme: ClientScheme | None = None
        self.last_stats: RoundStats | None = None

    # -- session ---------------------------------------------------------------------------

    @property
    def session(self) -> aggregator_pb2.Session:
        """The aggregator's scheme and public parameters."""
        if self._session is None:
            try:
                self._session = self._stub.GetSession(aggregator_pb2.SessionRequest(), wait_for_ready=True, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ServiceUnavailable(
                        "no aggregator answered within 30 s: check its address, and that both sides use TLS with "
                        "certificates of the federation's CA (or both --insecure)") from None
                raise from_rpc_error(exc) from None
        return self._session

    @property
    def scheme(self) -> ClientScheme:
        """The client half of the aggregator's scheme, checked against this site's pins."""
        if self._scheme is None:
            self._scheme = client_scheme(self.session, self.identity, self._pins)
        return self._scheme

    # -- aggregation -----------------------------------------------------------------------

    def aggregate(self, update: Mapping[str, Any] | Sequence[Any], *, weight: float = 1.0,
                  round_id: str | None = None, timeout: float | None = None,
                  simulate_dropout: str | None = None) -> Any:
        """Contribute `update` with `weight` to a round and return the round's weighted average,
        in the structure given (torch state_dict in, torch state_dict out). Blocks until the
        round completes; raises a SecureFLError if it fails (e.g. QuorumTimeout).

        `simulate_dropout` (simulations and tests) makes this client vanish just before the
        named stage of an interactive scheme (e.g. secagg's advertise_keys, share_keys, submit,
        unmask), raising SimulatedDropout."""
        weight = check_weight(weight)
        scheme = self.scheme
        vector, spec = flatten(update)
        if scheme.interactive or round_id is None:
            round_id = invoke(self._stub.JoinRound, aggregator_pb2.JoinRoundRequest(
                client_id=self.identity.client_id, round_id=round_id or "")).round_id
        job = scheme.start(round_id, vector, weight)
        run = _Run(self, round_id, spec.hash, job)
        started = time.perf_counter()
        if scheme.interactive:
            run.follow_stages(simulate_dropout)
        else:
            run.submit(Stage(SUBMIT))
        submitted = time.perf_counter()
        average = self._await_result(round_id, spec.size, timeout)
        protect = sum(run.stage_seconds.values())
        self.last_stats = RoundStats(round_id, protect, submitted - started - protect, time.perf_counter() - submitted,
                                     run.bytes_sent, spec.size + 1, run.stage_seconds)
        return unflatten(average, spec)

    def _submit(self, round_id: str, spec_hash: bytes, protected: Protected) -> int:
        """Sign a receipt over the protected chunks, stream them, and check the acknowledgement;
        returns the bytes sent."""
        receipt = signed_receipt(self.identity, round_id, self.session.scheme, spec_hash, protected)
        ack = invoke(self._stub.Submit, _submission(receipt, protected.chunks))
        self._check_ack(ack, receipt)
        return sum(len(c) for c in protected.chunks)

    def _check_ack(self, ack: aggregator_pb2.SubmitAck, receipt: common_pb2.Receipt) -> None:
        """Against the aggregator key pinned in the federation file, whatever key the ack names."""
        if not self.federation.aggregator.verify(ack.aggregator_signature, ack_message(receipt)):
            raise VerificationFailed("the aggregator's acknowledgement is not signed by the pinned aggregator key")

    def _await_result(self, round_id: str, expected_length: int, timeout: float | None) -> np.ndarray:
        """Wait for the round's average. An acknowledged submission survives an aggregator
        restart, so a dropped connection is retried until `timeout`."""
        request = aggregator_pb2.RoundRequest(round_id=round_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                messages = list(self._stub.AwaitResult(request, timeout=remaining, wait_for_ready=True))
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or (deadline is not None and time.monotonic() >= deadline):
                    raise from_rpc_error(exc) from None
                time.sleep(0.2)
        if not messages or not messages[0].HasField("header"):
            raise SecureFLError(f"round {round_id}: the aggregator sent no result")
        return join_float64([m.chunk.data for m in messages[1:]], expected_length)

    def round_info(self, round_id: str) -> aggregator_pb2.RoundInfo:
        """The aggregator's view of a round: state, contributors, and its timing metrics."""
        return invoke(self._stub.GetRound, aggregator_pb2.RoundRequest(round_id=round_id))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Run:
    """One client's round over gRPC: follows the scheme's stages and times the local work."""

    def __init__(self, client: Client, round_id: str, spec_hash: bytes, job: ClientRound) -> None:
        self._client = client
        self._round_id = round_id
        self._spec_hash = spec_hash
        self._job = job
        self.stage_seconds: dict[str, float] = {}
        self.bytes_sent = 0

    def _timed(self, stage: str, work, *args):
        started = time.perf_counter()
        result = work(*args)
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started
        return result

    def submit(self, stage: Stage) -> None:
        protected = self._timed(stage.name, self._job.protect, stage)
        self.bytes_sent += self._client._submit(self._round_id, self._spec_hash, protected)

    def follow_stages(self, drop_at: str | None) -> None:
        """Ask the aggregator what to do next and do it, until the round is done."""
        stub, client_id = self._client._stub, self._client.identity.client_id
        request = aggregator_pb2.StageRequest(round_id=self._round_id, client_id=client_id)
        while True:
            message = invoke(stub.AwaitStage, request, timeout=60)
            if not message.stage:
                continue
            if message.stage == DONE:
                return
            if message.stage == drop_at:
                raise SimulatedDropout(message.stage)
            stage = Stage(message.stage, message.body)
            if stage.name == SUBMIT:
                self.submit(stage)
            else:
                body = self._timed(stage.name, self._job.answer, stage)
                invoke(stub.AnswerStage, aggregator_pb2.StageMessage(
                    round_id=self._round_id, client_id=client_id, stage=stage.name, body=body))


def _submission(receipt: common_pb2.Receipt, chunks: list[bytes]) -> Iterator[aggregator_pb2.SubmitMessage]:
    yield aggregator_pb2.SubmitMessage(header=aggregator_pb2.SubmissionHeader(receipt=receipt, chunk_count=len(chunks)))
    for index, data in enumerate(chunks):
        yield aggregator_pb2.SubmitMessage(chunk=common_pb2.Chunk(index=index, data=data))


def connect(address: str, *, identity: Identity, federation: Federation, tls: TlsConfig | None = None,
            insecure: bool = False, keyholder_fingerprint: bytes | str | None = None,
            allow_plain: bool = False) -> Client:
    """A client of the aggregator at `address`, signing with `identity`, pinning what
    `federation` (the federation file) says. `tls` is the site's TLS material; plaintext only
    with `insecure=True`. For the ckks scheme, `keyholder_fingerprint` (hex or bytes, from the
    key-holder's operator) must be pinned too. `allow_plain` lets the aggregator run the
    unprotected plain scheme (measurements only)."""
    return Client(address, identity, federation, keyholder_fingerprint, tls, insecure, allow_plain)
