"""The client library a site's training loop calls.

    client = securefl.connect("aggregator:7000", identity=identity, federation=federation, tls=tls,
                              keyholder_fingerprint=pin)
    averaged = client.aggregate(model.state_dict(), weight=n_samples)

Security: the update is scaled by its weight and protected (CKKS-encrypted under the pinned
key-holder's public key) before it leaves this process; only the weighted average of a round
comes back. The key-holder fingerprint must be pinned: a session whose public context does not
hash to it is refused, so a malicious aggregator cannot substitute its own key. Everything
else that decides security comes from the federation file, never from the aggregator: the
roster, the aggregator's key (an acknowledgement is checked against it) and the SecAgg+
parameters. The channel is mutual TLS, and the server must hold the aggregator's certificate.

Large CKKS updates are encrypted on a pool of worker processes started with `spawn`; as with
any Python multiprocessing, a script that calls `aggregate` must guard its entry point with
`if __name__ == "__main__":`."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from .errors import InvalidInput, SecureFLError, ServiceUnavailable, VerificationFailed, from_rpc_error
from .federation import Federation
from .he.codec import encrypt_chunks
from .he.keys import fingerprint, load_public_context
from .he.pool import INLINE_MAX_CHUNKS, shared_pool
from .identity import Identity, ack_message, sign_receipt
from .masking.client import SecAggParticipant
from .masking.client import run_round as run_secagg_round
from .masking.server import MASKED_CHUNK_VALUES, secagg_config
from .pki import AGGREGATOR, SITE, PartyName
from .schemes import CKKS, PLAIN, SECAGG, ChunkDigest, chunk_count, join_float64, plain_chunks
from .services.rpc import channel
from .tensors import flatten, unflatten
from .tls import TlsConfig
from .v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2


@dataclass
class _Sent:
    bytes_sent: int
    protect_seconds: float


@dataclass
class RoundStats:
    """What one aggregate() call cost this client."""

    round_id: str
    protect_seconds: float
    upload_seconds: float
    wait_seconds: float
    bytes_sent: int
    values: int
    stage_seconds: dict[str, float] = field(default_factory=dict)  # secagg: local work per stage


class Client:
    def __init__(self, address: str, identity: Identity, federation: Federation,
                 keyholder_fingerprint: bytes | str | None = None, tls: TlsConfig | None = None,
                 insecure: bool = False) -> None:
        if tls is not None and tls.party != PartyName(SITE, identity.client_id):
            raise InvalidInput(f"the TLS certificate names {tls.party}, not site {identity.client_id}")
        self.identity = identity
        self.federation = federation
        self._roster = federation.roster
        self._pin = bytes.fromhex(keyholder_fingerprint) if isinstance(keyholder_fingerprint, str) else keyholder_fingerprint
        self._channel = channel(address, tls, server=PartyName(AGGREGATOR, federation.aggregator.party_id),
                                insecure=insecure)
        self._stub = aggregator_pb2_grpc.AggregatorStub(self._channel)
        self._session: aggregator_pb2.Session | None = None
        self._he_context = None
        self.last_stats: RoundStats | None = None

    # -- session ---------------------------------------------------------------------------

    @property
    def session(self) -> aggregator_pb2.Session:
        """The aggregator's scheme and (for CKKS) public context, checked against the pin."""
        if self._session is None:
            try:
                session = self._stub.GetSession(aggregator_pb2.SessionRequest(), wait_for_ready=True, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ServiceUnavailable(
                        "no aggregator answered within 30 s: check its address, and that both sides use TLS with "
                        "certificates of the federation's CA (or both --insecure)") from None
                raise from_rpc_error(exc) from None
            if session.scheme == CKKS:
                if self._pin is None:
                    raise VerificationFailed("the ckks scheme needs the key-holder's fingerprint pinned")
                if not hmac.compare_digest(fingerprint(session.he_context), self._pin):
                    raise VerificationFailed("the key-holder context relayed by the aggregator does not match the pinned fingerprint")
                self._he_context = load_public_context(session.he_context)
            elif session.scheme == SECAGG:
                self._check_secagg_config(session.secagg)
            elif session.scheme != PLAIN:
                raise InvalidInput(f"this client does not support scheme {session.scheme!r}")
            self._session = session
        return self._session

    @property
    def scheme(self) -> str:
        return self.session.scheme

    def _check_secagg_config(self, offered: aggregator_pb2.SecAggConfig) -> None:
        """The SecAgg+ parameters follow from the federation file alone; an aggregator offering
        others (a smaller threshold, a wider range) is refused."""
        security = self.federation.security
        pinned = secagg_config(len(self._roster), security.value_bound, security.max_weight,
                               security.dropout_fraction, security.corrupt_fraction)
        if offered != pinned:
            raise VerificationFailed("the aggregator's SecAgg+ parameters differ from the federation file's")

    # -- aggregation -----------------------------------------------------------------------

    def aggregate(self, update: Mapping[str, Any] | Sequence[Any], *, weight: float = 1.0,
                  round_id: str | None = None, timeout: float | None = None,
                  simulate_dropout: str | None = None) -> Any:
        """Contribute `update` with `weight` to a round and return the round's weighted average,
        in the structure given (torch state_dict in, torch state_dict out). Blocks until the
        round completes; raises a SecureFLError if it fails (e.g. QuorumTimeout).

        `simulate_dropout` (secagg only; simulations and tests) makes this client vanish just
        before the named stage: advertise_keys, share_keys, masked_input or unmask."""
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
            raise InvalidInput(f"weight must be a positive finite number, got {weight!r}")
        session = self.session
        vector, spec = flatten(update)
        if round_id is None:
            round_id = self._call(self._stub.JoinRound, aggregator_pb2.JoinRoundRequest(client_id=self.identity.client_id)).round_id
        started = time.perf_counter()
        stage_seconds: dict[str, float] = {}
        if session.scheme == SECAGG:
            sent = self._secagg_round(round_id, spec, vector, float(weight), simulate_dropout, stage_seconds)
        else:
            payload = np.append(vector * float(weight), float(weight))
            self._check_range(payload, session)
            chunks = self._protect(payload)
            sent = self._submit(round_id, spec.hash, chunks, payload.size, time.perf_counter() - started)
        submitted = time.perf_counter()
        average = self._await_result(round_id, spec.size, timeout)
        protect = sent.protect_seconds + sum(stage_seconds.values())
        self.last_stats = RoundStats(round_id, protect, submitted - started - protect, time.perf_counter() - submitted,
                                     sent.bytes_sent, spec.size + 1, stage_seconds)
        return unflatten(average, spec)

    def _secagg_round(self, round_id: str, spec, vector: np.ndarray, weight: float, simulate_dropout: str | None,
                      stage_seconds: dict[str, float]) -> _Sent:
        participant = SecAggParticipant(self.identity, self._roster, self.session.secagg, round_id,
                                        self.federation.security.min_participants)
        sent: list[_Sent] = []

        def submit(masked: np.ndarray) -> None:
            protect_started = time.perf_counter()
            chunks = [masked[i:i + MASKED_CHUNK_VALUES].astype(masked.dtype.newbyteorder("<")).tobytes()
                      for i in range(0, masked.size, MASKED_CHUNK_VALUES)]
            protect_seconds = time.perf_counter() - protect_started
            sent.append(self._submit(round_id, spec.hash, chunks, masked.size, protect_seconds))

        try:
            run_secagg_round(self._stub, self._call, participant, vector, weight, submit, drop_at=simulate_dropout)
        finally:
            stage_seconds.update(participant.stage_seconds)
        return sent[0]

    def _submit(self, round_id: str, spec_hash: bytes, chunks: list[bytes], vector_length: int,
                protect_seconds: float | None = None) -> _Sent:
        """Sign a receipt over the protected chunks, stream them, and check the acknowledgement."""
        receipt = common_pb2.Receipt(
            round_id=round_id, client_id=self.identity.client_id, scheme=self.session.scheme, spec_hash=spec_hash,
            vector_length=vector_length, digest=ChunkDigest.of(chunks),
        )
        sign_receipt(self.identity, receipt)
        ack = self._call(self._stub.Submit, self._submission(receipt, chunks))
        self._check_ack(ack, receipt)
        return _Sent(sum(len(c) for c in chunks), protect_seconds or 0.0)

    def _check_range(self, payload: np.ndarray, session: aggregator_pb2.Session) -> None:
        """CKKS sums wrap silently past max_abs_sum; refuse an update that could get there."""
        bound = session.max_abs_sum / max(1, session.max_clients)
        largest = float(np.abs(payload).max())
        if largest > bound:
            raise InvalidInput(
                f"weighted update reaches {largest:.3g}, above {bound:.3g} (= the scheme's range / {session.max_clients} "
                "enrolled clients); use a smaller weight (e.g. a fraction of samples) or clip the update"
            )

    def _protect(self, payload: np.ndarray) -> list[bytes]:
        if self.session.scheme == PLAIN:
            return plain_chunks(payload)
        slots = self.session.chunk_values
        if chunk_count(payload.size, slots) <= INLINE_MAX_CHUNKS:
            return encrypt_chunks(self._he_context, payload, slots)
        return shared_pool(self.session.he_context).encrypt(payload, slots)

    @staticmethod
    def _submission(receipt: common_pb2.Receipt, chunks: list[bytes]) -> Iterator[aggregator_pb2.SubmitMessage]:
        yield aggregator_pb2.SubmitMessage(header=aggregator_pb2.SubmissionHeader(receipt=receipt, chunk_count=len(chunks)))
        for index, data in enumerate(chunks):
            yield aggregator_pb2.SubmitMessage(chunk=common_pb2.Chunk(index=index, data=data))

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
        return self._call(self._stub.GetRound, aggregator_pb2.RoundRequest(round_id=round_id))

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, method, request, **kwargs):
        try:
            return method(request, **kwargs)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: str, *, identity: Identity, federation: Federation, tls: TlsConfig | None = None,
            insecure: bool = False, keyholder_fingerprint: bytes | str | None = None) -> Client:
    """A client of the aggregator at `address`, signing with `identity`, pinning what
    `federation` (the federation file) says. `tls` is the site's TLS material; plaintext only
    with `insecure=True`. For the ckks scheme, `keyholder_fingerprint` (hex or bytes, from the
    key-holder's operator) must be pinned too."""
    return Client(address, identity, federation, keyholder_fingerprint, tls, insecure)
