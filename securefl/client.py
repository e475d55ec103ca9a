"""The client library a site's training loop calls, over gRPC.

    client = securefl.connect("aggregator:7000", identity=identity, federation=federation, tls=tls)
    averaged = client.aggregate(model.state_dict(), weight=n_samples)

Security: the update is scaled by its weight and protected by the aggregator's scheme (its
client half, `securefl.schemes.client_scheme`) before it leaves this process; only the weighted
average of a round comes back. What the site trusts comes from its pins, never from the
aggregator: the federation file (the roster, the aggregator's key — every acknowledgement is
checked against it —, the key-holder's key — every HE key epoch is checked against it — and the
security parameters); a scheme whose session does not match the pins is refused. The channel is
mutual TLS, and the server must hold the aggregator's certificate.

An aggregator restart does not fail a round: every call is retried while the aggregator is
unreachable (or cancels a long poll while it drains), for at most RECONNECT_SECONDS in a row,
then ServiceUnavailable; the protected update is made once and kept until the round's result arrives,
to be resent if the restart lost it. Resending identical bytes reveals nothing new; protecting
the update again (fresh SecAgg+ masks over the same pairwise masks, say) could, so it never
happens.

Large HE updates are encrypted on worker processes that are plain subprocesses
(`securefl.he.pool`), so calling `aggregate` needs no `if __name__ == "__main__":` guard and works
from `python -`, a notebook or a thread."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from .errors import InvalidInput, RoundClosed, SecureFLError, ServiceUnavailable, VerificationFailed
from .federation import Federation
from .identity import Identity, ack_message
from .pki import AGGREGATOR, SITE, PartyName
from .rounds.chunks import join_array, receipt_digest_of
from .rounds.sharding import shard_ranges, shard_round_id
from .rounds.scheme import DONE, SUBMIT, ClientRound, ClientScheme, Protected, Stage, signed_receipt
from .schemes import ClientPins, client_scheme
from .services.rpc import channel, chunk_message, chunk_runs, from_rpc_error, invoke, raised_by_server
from .tensors import check_weight, flatten, unflatten
from .tls import TlsConfig
from .v1 import aggregator_pb2, aggregator_pb2_grpc, common_pb2


T = TypeVar("T")
RETRY_SECONDS = 0.2
RECONNECT_SECONDS = 120.0  # how long a client waits for an unreachable (restarting) aggregator
STAGE_CALL_SECONDS = 60.0  # also how often a long wait for a result is asked again


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
    upload_began: float = 0.0  # time.perf_counter() when the protected update started to stream
    upload_ended: float = 0.0  # ... and when its acknowledgement arrived


class Client:
    def __init__(self, address: str, identity: Identity, federation: Federation, tls: TlsConfig | None = None,
                 insecure: bool = False, allow_plain: bool = False) -> None:
        if tls is not None and tls.party != PartyName(SITE, identity.client_id):
            raise InvalidInput(f"the TLS certificate names {tls.party}, not site {identity.client_id}")
        self.identity = identity
        self.federation = federation
        self._pins = ClientPins(federation=federation, allow_plain=allow_plain)
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
                  simulate_dropout: str | None = None, before_upload: Callable[[], None] | None = None) -> Any:
        """Contribute `update` with `weight` to a round and return the round's weighted average,
        in the structure given (torch state_dict in, torch state_dict out). Blocks until the
        round completes (or `timeout` seconds pass); raises a SecureFLError if it fails (e.g.
        QuorumTimeout), and ServiceUnavailable if the aggregator stays unreachable for
        RECONNECT_SECONDS. An update the scheme can never protect (a weight or value out of the
        federation's range) is refused before any round is joined.

        `simulate_dropout` (simulations and tests) makes this client vanish just before the
        named stage of an interactive scheme (e.g. secagg's advertise_keys, share_keys, submit,
        unmask), raising SimulatedDropout. `before_upload` (benchmarks) is called once the update is
        protected, just before it is sent, e.g. to start every client's upload at once."""
        weight = check_weight(weight)
        scheme = self.scheme
        vector, spec = flatten(update)
        scheme.check(vector, weight)
        deadline = None if timeout is None else time.monotonic() + timeout
        if scheme.interactive or round_id is None:
            request = aggregator_pb2.JoinRoundRequest(client_id=self.identity.client_id, round_id=round_id or "")
            round_id = _retrying(lambda: self._stub.JoinRound(request, timeout=_remaining(deadline)), deadline).round_id
        job = scheme.start(round_id, vector, weight)
        run = _Run(self, round_id, spec.hash, job, deadline, before_upload)
        started = time.perf_counter()
        if scheme.interactive:
            run.follow_stages(simulate_dropout)
        else:
            run.submit(Stage(SUBMIT))
        submitted = time.perf_counter()
        average = self._await_result(run, spec.size)
        protect = sum(run.stage_seconds.values())
        self.last_stats = RoundStats(round_id, protect, submitted - started - protect, time.perf_counter() - submitted,
                                     run.bytes_sent, spec.size + 1, run.stage_seconds, run.upload_began, run.upload_ended)
        return unflatten(average, spec)

    def _await_result(self, run: _Run, expected_length: int) -> np.ndarray:
        """Wait for the round's average. If the aggregator restarted meanwhile, resend the
        update (a submission it still counts is acknowledged without being added again), then
        wait again; the result says whose updates it holds."""
        request = aggregator_pb2.RoundRequest(round_id=run.round_id)
        resend = None if self.scheme.interactive else run.resend
        messages = _retrying(lambda: list(self._stub.AwaitResult(request, timeout=_polling(run.deadline))),
                             run.deadline, after_outage=resend)
        if not messages or not messages[0].HasField("header"):
            raise SecureFLError(f"round {run.round_id}: the aggregator sent no result")
        header = messages[0].header
        if header.contributor_ids and self.identity.client_id not in header.contributor_ids:
            raise RoundClosed(f"round {run.round_id} ended without this client's update (it was not resent in time "
                              "after an aggregator restart)")
        return join_array([m.chunk.data for m in messages[1:]], header.dtype or "<f8", expected_length)

    def _check_ack(self, ack: aggregator_pb2.SubmitAck, receipt: common_pb2.Receipt) -> None:
        """Against the aggregator key pinned in the federation file, whatever key the ack names."""
        if not self.federation.aggregator.verify(ack.aggregator_signature, ack_message(receipt)):
            raise VerificationFailed("the aggregator's acknowledgement is not signed by the pinned aggregator key")

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
    """One client's round over gRPC: follows the scheme's stages, sends the protected update,
    and times the local work. The protected update and its signed receipt are made once and
    kept until the round's result arrives: every call is retried while the aggregator is
    unavailable (restarting) and the aggregator takes a repeated call as the same one."""

    def __init__(self, client: Client, round_id: str, spec_hash: bytes, job: ClientRound,
                 deadline: float | None, before_upload: Callable[[], None] | None = None) -> None:
        self._client = client
        self.round_id = round_id
        self._spec_hash = spec_hash
        self._job = job
        self.deadline = deadline
        self._protected: Protected | None = None
        self._receipt: common_pb2.Receipt | None = None
        self.stage_seconds: dict[str, float] = {}
        self.bytes_sent = 0
        self._before_upload = before_upload
        self.upload_began = self.upload_ended = 0.0

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _timed(self, stage: str, work, *args):
        started = time.perf_counter()
        result = work(*args)
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started
        return result

    def submit(self, stage: Stage) -> None:
        """Protect the update (once: a stage asking again gets the same bytes) and send it."""
        if self._protected is None:
            self._protected = self._timed(stage.name, self._job.protect, stage)
            session = self._client.session
            self._receipt = signed_receipt(self._client.identity, self.round_id, session.scheme, self._spec_hash,
                                           self._protected, receipt_digest_of(session.receipt_digest))
            if self._before_upload is not None:
                self._before_upload()
        self.upload_began = time.perf_counter()
        self._send()
        self.upload_ended = time.perf_counter()

    def _send(self) -> None:
        assert self._protected is not None and self._receipt is not None
        protected, receipt, stub = self._protected, self._receipt, self._client._stub
        run_bytes = self._client.session.chunk_run_bytes
        ack = _retrying(lambda: stub.Submit(_submission(receipt, protected.chunks, run_bytes),
                                            timeout=_remaining(self.deadline)), self.deadline)
        self._client._check_ack(ack, receipt)
        self.bytes_sent = sum(len(c) for c in protected.chunks)

    def resend(self) -> None:
        """After a lost connection: send the update again unless its round has closed."""
        if self._protected is None:
            return
        try:
            self._send()
        except RoundClosed:
            pass  # closed with or without it: the result says which

    def follow_stages(self, drop_at: str | None) -> None:
        """Ask the aggregator what to do next and do it, until the round is done."""
        stub, client_id = self._client._stub, self._client.identity.client_id
        request = aggregator_pb2.StageRequest(round_id=self.round_id, client_id=client_id)
        message = aggregator_pb2.StageMessage()  # the next stage, when an answer's acknowledgement brought it
        while True:
            while not message.stage:
                message = _retrying(lambda: stub.AwaitStage(request, timeout=STAGE_CALL_SECONDS), self.deadline)
            if message.stage == DONE:
                return
            if message.stage == drop_at:
                raise SimulatedDropout(message.stage)
            stage = Stage(message.stage, message.body)
            message = aggregator_pb2.StageMessage()
            if stage.name == SUBMIT:
                self.submit(stage)
            else:
                answer = aggregator_pb2.StageMessage(round_id=self.round_id, client_id=client_id, stage=stage.name,
                                                     body=self._timed(stage.name, self._job.answer, stage),
                                                     await_next=True)
                try:
                    message = _retrying(lambda: stub.AnswerStage(answer, timeout=STAGE_CALL_SECONDS),
                                        self.deadline).next
                except RoundClosed:
                    continue  # e.g. a retried answer the round took before it ended: the next stage says


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _polling(deadline: float | None) -> float:
    """The timeout of one long-poll call: it is asked again after STAGE_CALL_SECONDS."""
    remaining = _remaining(deadline)
    return STAGE_CALL_SECONDS if remaining is None else min(STAGE_CALL_SECONDS, remaining)


def _retrying(call: Callable[[], T], deadline: float | None, after_outage: Callable[[], None] | None = None) -> T:
    """Make an idempotent call until it succeeds, fails with a real answer, `deadline` passes,
    or the aggregator has been unreachable for RECONNECT_SECONDS in a row (ServiceUnavailable).
    Unreachable: UNAVAILABLE, or a call the draining aggregator cancelled; a long poll that
    reached its own timeout is asked again. `after_outage` runs before each retry that follows
    an outage (e.g. resend an update a restart may have lost)."""
    outage_started: float | None = None
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            now = time.monotonic()
            if raised_by_server(exc) or (deadline is not None and now >= deadline):
                raise from_rpc_error(exc) from None
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                outage_started = None
                continue
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise from_rpc_error(exc) from None
            outage_started = outage_started or now
            if now - outage_started >= RECONNECT_SECONDS:
                raise ServiceUnavailable(f"the aggregator was unreachable for {now - outage_started:.0f} s; stopped "
                                         "waiting (an acknowledged submission still counts if it comes back)") from None
        time.sleep(RETRY_SECONDS)
        if outage_started is not None and after_outage is not None:
            after_outage()


def _submission(receipt: common_pb2.Receipt, chunks: list[bytes],
                run_bytes: int) -> Iterator[aggregator_pb2.SubmitMessage]:
    """The header, then the chunks: in runs of up to `run_bytes` (the session's), or one per
    message to an aggregator that names no run size (one from before runs)."""
    yield aggregator_pb2.SubmitMessage(header=aggregator_pb2.SubmissionHeader(receipt=receipt, chunk_count=len(chunks)))
    if run_bytes:
        yield from chunk_runs(aggregator_pb2.SubmitMessage, chunks, run_bytes)
    else:
        yield from (chunk_message(aggregator_pb2.SubmitMessage, index, data) for index, data in enumerate(chunks))


class ShardedClient:
    """A client of aggregators that split every round by chunk range (docs/scaling.md). Shard
    s gets its range of the update, with the weight, as a round of its own (the clients of a
    round must all name it); the shards' averages are joined. Each part is protected and
    receipted separately, so each shard — and the key-holder — checks exactly what it sums."""

    def __init__(self, addresses: Sequence[str], identity: Identity, federation: Federation,
                 tls: TlsConfig | None = None, insecure: bool = False, allow_plain: bool = False) -> None:
        self.identity = identity
        self.shards = [Client(address, identity, federation, tls, insecure, allow_plain) for address in addresses]

    def aggregate(self, update: Mapping[str, Any] | Sequence[Any], *, weight: float = 1.0, round_id: str,
                  timeout: float | None = None) -> Any:
        """As `Client.aggregate`, with every shard at once; `round_id` is required."""
        vector, spec = flatten(update)
        count = len(self.shards)
        ranges = shard_ranges(vector.size, count, self.shards[0].session.chunk_values)
        with ThreadPoolExecutor(count) as pool:
            parts = [pool.submit(shard.aggregate, vector[start:stop], weight=weight,
                                 round_id=shard_round_id(round_id, index, count), timeout=timeout)
                     for index, (shard, (start, stop)) in enumerate(zip(self.shards, ranges))]
            averages = [part.result() for part in parts]
        return unflatten(np.concatenate(averages), spec)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


def connect(address: str | Sequence[str], *, identity: Identity, federation: Federation, tls: TlsConfig | None = None,
            insecure: bool = False, allow_plain: bool = False) -> Client | ShardedClient:
    """A client of the aggregator at `address`, signing with `identity`, pinning what
    `federation` (the federation file) says: the roster, the aggregator's and the key-holder's
    keys, the security parameters; of sharded aggregators when `address` lists several (every
    round then needs an explicit `round_id`). `tls` is the site's TLS material; plaintext only
    with `insecure=True`. `allow_plain` lets the aggregator run the unprotected plain scheme
    (measurements only)."""
    if isinstance(address, str) or len(address) == 1:
        return Client(address if isinstance(address, str) else address[0], identity, federation, tls, insecure,
                      allow_plain)
    return ShardedClient(address, identity, federation, tls, insecure, allow_plain)
