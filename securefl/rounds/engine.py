"""The round engine: opens, fills, closes and recovers rounds of any scheme, for any transport.

A round is `open` until it has all expected submissions, or its deadline passes with at least
`min_clients`; it is then `closing` while the sum is revealed (for HE: decrypted by the
key-holder; for SecAgg+: unmasked with the survivors' shares), and ends `complete` with the
published average or `failed` with an error.

Guarantees, whatever a transport or a caller does:

* a submission is checked completely (receipt signature, scheme, round, model spec, the
  length the round fixed when it opened, every chunk, digest) before anything about the round
  changes — not even its creation; while it streams it holds memory reserved from a bounded
  budget (`admission.py`), once, as the parsed chunks it will add;
* an acknowledgement means "counted": the submission was added to the running sum and its
  receipt appended to the round's durable log. The client keeps its protected update until it
  has the result; if the aggregator restarts before the sum reached a checkpoint, the client
  is *owed* and resends it, and the round waits for it (until its deadline, extended by a grace
  period after the restart). A resent submission already in the recovered sum is acknowledged
  again and not added: nothing is lost silently, nothing is counted twice;
* every change of a round — counted receipts, stage answers, stage deadlines, the close — is
  logged before it is acknowledged or visible to another client, with the clock reading the
  scheme saw; after a restart the log is replayed into a fresh server round, so SecAgg+ (or
  any multi-stage scheme) continues in the stage it was in;
* the sum revealed is checkpointed with its exact contributor set before anything about it is
  revealed, so a restart while revealing sends the key-holder the identical request again;
* a scheme's methods are called under the round's lock, so a scheme's server half needs no
  locking of its own, and a bad message changes nothing. Adds run outside that lock, in
  parallel (`accumulate.py`); closing and checkpointing wait for the adds in progress;
* a site opens at most `RoundLimits.max_open_rounds_per_site` rounds (by naming a new one), all
  rounds together at most `max_open_rounds`; a site streams one submission per round at a
  time; finished rounds leave memory after `retention_seconds` and are then read from the
  store; round ids the engine picks are random, so no one can name a round before it exists;
* once draining (a shutdown), nothing new starts: no round, no submission, no reveal; the
  streams already running finish, and rounds left open are recovered at the next start.

Transports authenticate callers and pass the authenticated client id; the engine never takes a
client's identity from anything it cannot trust."""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, LimitExceeded, PayloadTooLarge, PermissionDenied, QuorumTimeout,
    RoundClosed, RoundExists, RoundFailed, SecureFLError, ServiceUnavailable, SpecMismatch, UnknownClient, UnknownRound,
    VerificationFailed, error_named,
)
from ..identity import Roster, check_identifier, verify_receipt
from ..telemetry import COLLECT, COMPLETE as COMPLETED, FAILED as FAILURE, NO_METRICS, REVEAL, SUBMISSION, RoundMetrics
from ..v1 import common_pb2
from .admission import MemoryBudget
from .chunks import ChunkDigest, chunk_count, chunk_length
from .limits import RoundLimits
from .pause import pause_point
from .scheme import DONE, MAX_VECTOR_LENGTH, RoundConfig, ServerRound, ServerScheme, Stage
from .sharding import ShardRole
from .store import ANSWERED, CLOSED, JOINED, SUBMITTED, TICKED, Event, RoundRecord, RoundStore

log = logging.getLogger(__name__)

OPEN, CLOSING, COMPLETE, FAILED = "open", "closing", "complete", "failed"
_TICK_SECONDS = 0.05
_COORDINATOR_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Result:
    average: np.ndarray
    total_weight: float
    contributors: int
    contributor_ids: list[str]


class Round:
    def __init__(self, record: RoundRecord, scheme: ServerScheme | None, opened_by: str | None = None) -> None:
        """`scheme` None: a round that ended, read back from the store (no sum, no stages)."""
        self.record = record
        self.config = RoundConfig(record.min_clients, record.expected_clients, record.timeout_seconds)
        self.receipts: dict[str, common_pb2.Receipt] = {}  # counted: in the running sum
        self.owed: dict[str, common_pb2.Receipt] = {}  # acknowledged before a restart, not in the recovered sum
        self.joined: set[str] = set()  # sites that joined (interactive schemes join before their stages)
        self.opened_by = opened_by  # the site whose request created the round; None: an operator or a restart
        self.adding: set[str] = set()  # clients whose validated submission is being added
        self.answers: dict[tuple[str, str], bytes] = {}  # accepted stage answers, for retried calls
        self.now = record.opened_at  # the clock reading the scheme sees (the engine pins it per event)
        self.accumulator = scheme.new_accumulator() if scheme is not None else None
        self.scheme_round: ServerRound | None = (
            scheme.new_round(record.round_id, self.config, record.opened_at, clock=lambda: self.now)
            if scheme is not None else None)
        lock = threading.RLock()
        self.changed = threading.Condition(lock)  # any change: the engine's own waits
        self.moved = threading.Condition(lock)  # a change a waiting client can see (`RoundEngine._wake`)
        self.position: tuple[str, str | None] | None = None  # (state, scheme phase) when `moved` last woke
        self.average: np.ndarray | None = None
        self.ended_at: float | None = None  # by the engine's clock; finished rounds leave memory after retention
        self.checkpointed_at = record.opened_at
        self.checkpointed_count = 0
        self.resume_until = 0.0  # after a restart: owed clients may resend until then, whatever the deadline
        self.close_pending = False  # closing, its checkpoint not yet recorded: no stage follows until it is
        self.aggregation_seconds = 0.0  # operational metrics, not persisted
        self.reveal_seconds = 0.0

    @property
    def round_id(self) -> str:
        return self.record.round_id

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def ended(self) -> bool:
        return self.state in (COMPLETE, FAILED)

    def contributed(self, client_id: str) -> bool:
        """Whether the client's update is in the round's sum (or, once complete, its result)."""
        return client_id in self.receipts or client_id in (self.record.signatures or {})

    def counted(self, receipt: common_pb2.Receipt) -> bool:
        """Whether exactly this signed submission is already in the sum or the result (a resend)."""
        existing = self.receipts.get(receipt.client_id)
        signature = existing.signature if existing is not None else (self.record.signatures or {}).get(receipt.client_id)
        return signature is not None and hmac.compare_digest(signature, receipt.signature)

    def check_accepts(self, receipt: common_pb2.Receipt) -> None:
        """Raise unless this round can take the receipt's submission. Reads state only."""
        if self.state != OPEN:
            raise RoundClosed(f"round {self.round_id} is {self.state} and takes no more submissions")
        if receipt.client_id in self.receipts:
            raise DuplicateSubmission(f"client {receipt.client_id} already contributed to round {self.round_id}")
        if self.record.spec_hash is not None and receipt.spec_hash != self.record.spec_hash:
            raise SpecMismatch(f"model structure differs from round {self.round_id}'s")
        if self.record.vector_length is not None and receipt.vector_length != self.record.vector_length:
            raise LengthMismatch(
                f"vector length {receipt.vector_length} differs from round {self.round_id}'s {self.record.vector_length}"
            )
        self.scheme_round.admit(receipt)

    def error(self) -> SecureFLError:
        return error_named(self.record.error_type, self.record.error_message or "round failed", RoundFailed)


class RoundEngine:
    """Thread-safe. `clock` is injectable so tests of deadlines are deterministic."""

    def __init__(self, scheme: ServerScheme, store: RoundStore, roster: Roster, defaults: RoundConfig,
                 implicit_rounds: bool = True, clock: Callable[[], float] = time.time, watch: bool = True,
                 budget: MemoryBudget | None = None, checkpoint_seconds: float = 60.0,
                 resubmit_grace: float = 30.0, shard: ShardRole | None = None, limits: RoundLimits = RoundLimits(),
                 metrics: RoundMetrics = NO_METRICS) -> None:
        """`watch`: apply deadlines on a thread of the engine's own; without it the driver calls
        `tick` (in-process runs with a manual clock). `checkpoint_seconds`: how often an open
        round's sum is checkpointed (0: after every submission); `resubmit_grace`: how long
        after a restart owed clients may resend, even past the round's deadline. `shard`: this
        engine sums one chunk range of rounds split across aggregators; its coordinator, not its
        own deadlines, decides who is counted and when rounds close (`sharding.py`)."""
        self.scheme = scheme
        self.store = store
        self.roster = roster
        self.defaults = defaults.validate()
        self.implicit_rounds = implicit_rounds
        self.clock = clock
        self.budget = budget or MemoryBudget()
        self.checkpoint_seconds = checkpoint_seconds
        self.resubmit_grace = resubmit_grace
        self.shard = shard
        self.limits = limits.validate()
        self.metrics = metrics
        self._rounds: dict[str, Round] = {}
        self._streams: set[tuple[str, str]] = set()  # (round, site) of the submissions being read
        self._closing: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._seq = 0
        self._stopped = threading.Event()
        self._draining = threading.Event()
        self._recover()
        self._watcher = threading.Thread(target=self._watch, name="round-deadlines", daemon=True)
        if watch:
            self._watcher.start()

    def _submission_bytes(self, vector_length: int) -> int:
        """Memory one validated submission of this length occupies."""
        return chunk_count(vector_length, self.scheme.chunk_values) * self.scheme.chunk_bytes

    # -- opening -------------------------------------------------------------------------

    def open_round(self, round_id: str | None, config: RoundConfig | None) -> Round:
        """An operator's round (counted against `max_open_rounds` only)."""
        config = (config or self.defaults).validate()
        if round_id is not None:
            check_identifier(round_id, "round id")
        self._refuse_new_work()
        with self._lock:
            if round_id is not None and self._find(round_id) is not None:
                raise RoundExists(f"round {round_id} already exists")
            return self._register(self._new_round(round_id, config, opened_by=None))

    def _new_round(self, round_id: str | None, config: RoundConfig, opened_by: str | None) -> Round:
        """A round object that is not yet registered nor stored. An id the engine picks is
        random: nobody can predict it, nor claim it first. The caller holds the engine lock."""
        generated = False
        while round_id is None or (generated and self._find(round_id) is not None):
            round_id, generated = f"round-{secrets.token_hex(8)}", True
        if self.shard is not None:
            self.shard.round_of(round_id)  # a shard takes only rounds of its own shard layout
        record = RoundRecord(round_id, 0, OPEN, config.min_clients, config.expected_clients,
                             config.timeout_seconds, self.clock(), vector_length=config.vector_length or None)
        return Round(record, self.scheme, opened_by)

    def _check_can_open(self, opened_by: str | None) -> None:
        """Raise unless one more round may open now (for `opened_by`, a site or None for the
        operator). The caller holds the engine lock."""
        live = [r for r in self._rounds.values() if not r.ended]
        if len(live) >= self.limits.max_open_rounds:
            raise LimitExceeded(f"{len(live)} rounds are open, the most this aggregator allows; "
                                "try again when one has ended")
        if opened_by is not None and sum(r.opened_by == opened_by for r in live) >= self.limits.max_open_rounds_per_site:
            raise LimitExceeded(f"{opened_by} has opened {self.limits.max_open_rounds_per_site} rounds that are still "
                                "open, the most a site may")

    def _register(self, round_: Round) -> Round:
        """Store and publish a new round, within the caps; the caller holds the engine lock."""
        self._check_can_open(round_.opened_by)
        self._seq += 1
        round_.record.seq = self._seq
        self.store.create_round(round_.record)
        self._rounds[round_.round_id] = round_
        if round_.record.vector_length:
            self.budget.know_submission_size(self._submission_bytes(round_.record.vector_length))
        self._follow_coordinator(round_)
        log.info("opened round %s (%s)", round_.round_id, round_.config)
        self.metrics.round_opened()
        self.metrics.open_rounds(sum(not r.ended for r in self._rounds.values()))
        return round_

    def _find(self, round_id: str) -> Round | None:
        """The round in memory, or a finished one read back from the store (evicted, or
        finished before a restart). The caller holds the engine lock."""
        found = self._rounds.get(round_id)
        if found is not None:
            return found
        record = self.store.round(round_id)
        return Round(record, None) if record is not None else None

    def join(self, client_id: str, round_id: str | None = None) -> Round:
        """The round named (opened with the defaults if rounds open implicitly), or else the
        oldest open round this client has not contributed to, or a new one."""
        self._check_enrolled(client_id)
        if round_id is not None:
            check_identifier(round_id, "round id")
        with self._lock:
            if round_id is not None:
                found = self._find(round_id)
                if found is None and not self.implicit_rounds:
                    raise UnknownRound(f"no round {round_id}; rounds are opened by the operator")
            else:
                found = next((r for r in self._rounds.values() if r.state == OPEN and client_id not in r.receipts),
                             None)
            if found is None:
                self._refuse_new_work()
                found = self._register(self._new_round(round_id, self.defaults, opened_by=client_id))
        with found.changed:
            if client_id not in found.joined and not found.ended:
                self._log(found, Event(JOINED, self.clock(), client_id))  # replayed: a restart keeps who joined
            found.joined.add(client_id)
        self.store.sync_log(found.record)
        return found

    def get(self, round_id: str) -> Round:
        check_identifier(round_id, "round id")
        with self._lock:
            found = self._find(round_id)
        if found is None:
            raise UnknownRound(f"no round {round_id}")
        return found

    def check_participant(self, round_: Round, client_id: str) -> None:
        """Raise PermissionDenied unless the site joined or contributed to the round (or is owed
        after a restart)."""
        if not (client_id in round_.joined or client_id in round_.owed or round_.contributed(client_id)):
            raise PermissionDenied(f"{client_id} takes no part in round {round_.round_id}")

    def check_contributor(self, round_: Round, client_id: str) -> None:
        """Raise PermissionDenied unless the site's submission is part of the round: only
        contributors receive a round's result."""
        if not round_.contributed(client_id):
            raise PermissionDenied(f"{client_id} did not contribute to round {round_.round_id}; its result is not "
                                   "for this site")

    def _check_enrolled(self, client_id: str) -> None:
        check_identifier(client_id, "client id")
        if client_id not in self.roster:
            raise UnknownClient(f"client {client_id!r} is not enrolled")

    # -- stages --------------------------------------------------------------------------

    def await_stage(self, round_id: str, client_id: str, timeout: float) -> Stage | None:
        """What the client must do next in the round, waiting up to `timeout` seconds for it;
        None if nothing came up in that time. A failed round raises its error."""
        self._check_enrolled(client_id)
        round_ = self.get(round_id)
        self.check_participant(round_, client_id)
        deadline = time.monotonic() + timeout
        with round_.changed:
            while True:
                if round_.state == FAILED:
                    raise round_.error()
                if round_.state == COMPLETE:
                    if not round_.contributed(client_id):
                        raise RoundClosed(f"round {round_id} ended without an input from {client_id}")
                    return Stage(DONE)
                if self._draining.is_set():  # nothing new starts; the client asks again after the restart
                    return None
                stage = round_.scheme_round.stage_for(client_id, client_id in round_.receipts)
                if stage is not None:
                    return stage
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                round_.moved.wait(remaining)

    def answer_stage(self, round_id: str, client_id: str, stage: str, body: bytes) -> None:
        """Apply a client's reply to a stage of the round's scheme, logged before it returns.
        The same reply sent again (a retry after a lost acknowledgement) is accepted as is. A
        failed round raises its error, so a client answering too late learns why it ended."""
        self._check_enrolled(client_id)
        round_ = self.get(round_id)
        self.check_participant(round_, client_id)
        with round_.changed:
            if round_.answers.get((client_id, stage)) != body:
                if round_.state == FAILED:
                    raise round_.error()
                if round_.ended:
                    raise RoundClosed(f"round {round_id} has ended")
                round_.now = self.clock()
                round_.scheme_round.answer(client_id, stage, body)
                self._log(round_, Event(ANSWERED, round_.now, client_id, stage, body))
                pause_point("stage.answered")
                round_.answers[(client_id, stage)] = body
                self._scheme_changed(round_)
        self.store.sync_log(round_.record)  # durable before acknowledged

    def _log(self, round_: Round, event: Event) -> None:
        """Append to the round's log after its scheme state already moved: if the log cannot
        be written, memory and log disagree and the round fails. The caller holds the lock."""
        try:
            self.store.append_event(round_.record, event)
        except Exception as exc:
            log.exception("cannot log round %s", round_.round_id)
            self._fail(round_, RoundFailed(f"the aggregator could not record round {round_.round_id}: {exc}"))
            raise round_.error() from None

    def _wake(self, round_: Round) -> None:
        """Wake the engine's own waits on every change, and the clients' long polls (a thread
        each, waiting for a next stage or the result) only when the round's state or its
        scheme's phase moved. Woken on every change, each of a SecAgg+ round's n waiting
        clients woke at every other client's answer and every deadline tick: O(n^2) thread
        wake-ups per stage (a 50-client round: 1.41 against 1.32 aggregator CPU-s). The caller
        holds the round's lock."""
        round_.changed.notify_all()
        position = (round_.state, round_.scheme_round.phase if round_.scheme_round is not None else None)
        if position != round_.position:
            round_.position = position
            round_.moved.notify_all()

    def _scheme_changed(self, round_: Round) -> None:
        """After the scheme's state moved: wake the waiters, and fail the round if the scheme
        gave up on it. The caller holds the round's lock."""
        if round_.scheme_round.failure is not None and not round_.ended:
            self._fail(round_, round_.scheme_round.failure)
        self._wake(round_)

    # -- submissions ---------------------------------------------------------------------

    def submit(self, receipt: common_pb2.Receipt, announced_chunks: int, chunks: Iterable[tuple[int, bytes]],
               active: Callable[[], bool] = lambda: True) -> tuple[Round, int]:
        """Validate a whole submission (receipt, then every chunk as it streams in), add it to
        the round's sum and log it. Returns the round and its contributor count. Nothing about
        any round changes unless every check passes. `chunks` is not read before memory for
        the submission is reserved; `active` tells whether the caller is still waiting."""
        try:
            return self._submit(receipt, announced_chunks, chunks, active)
        except SecureFLError as exc:
            self.metrics.submission_refused(type(exc).__name__)
            raise

    def _submit(self, receipt: common_pb2.Receipt, announced_chunks: int, chunks: Iterable[tuple[int, bytes]],
                active: Callable[[], bool]) -> tuple[Round, int]:
        self._refuse_new_work()
        verify_receipt(self.roster, receipt)
        if receipt.scheme != self.scheme.name:
            raise SpecMismatch(f"this aggregator runs scheme {self.scheme.name!r}, not {receipt.scheme!r:.40}")
        if not 2 <= receipt.vector_length <= MAX_VECTOR_LENGTH:
            raise PayloadTooLarge(f"vector length {receipt.vector_length} is outside [2, {MAX_VECTOR_LENGTH}]")
        expected = chunk_count(receipt.vector_length, self.scheme.chunk_values)
        if announced_chunks != expected:
            raise LengthMismatch(f"{announced_chunks} chunks announced; length {receipt.vector_length} needs {expected}")
        round_ = self._round_for_submission(receipt.round_id, receipt.client_id)
        coordinated_round = self.shard.round_of(receipt.round_id) if self.shard is not None else None
        client_id = receipt.client_id
        with round_.changed:
            resent = round_.counted(receipt)  # a resend after a lost acknowledgement or a restart
            if not resent:
                round_.check_accepts(receipt)  # fail fast; checked again under the lock before adding
            contributors = len(round_.receipts)
        if resent:
            self.store.sync_log(round_.record)
            return round_, contributors
        size = expected * self.scheme.chunk_bytes
        with self._one_stream(round_.round_id, client_id):
            self.budget.acquire(size, active)
            held: list | None = None
            try:
                held, validation_seconds = self._read_chunks(chunks, receipt, expected)
                pause_point("submission.validated")
                if coordinated_round is not None and not self.shard.coordinator.ready(coordinated_round, client_id,
                                                                                      self.shard.index):
                    raise RoundClosed(f"round {coordinated_round} closed before every shard had the update of {client_id}")
                round_, contributors = self._accept(round_, receipt, held, validation_seconds)
            finally:
                held = None  # the sum keeps what it needs: the memory goes back before the budget does
                self.budget.release(size)
        self.store.sync_log(round_.record)  # durable before acknowledged
        self.metrics.submission_accepted()
        self.metrics.stage_finished(SUBMISSION, validation_seconds)
        log.info("round %s: counted %s (%d contributors)", round_.round_id, client_id, contributors)
        return round_, contributors

    def _round_for_submission(self, round_id: str, client_id: str) -> Round:
        """The existing round, or (implicit rounds) a new one that is registered only when its
        first submission is accepted (and may be opened now, or the stream is refused before
        it is read)."""
        check_identifier(round_id, "round id")
        with self._lock:
            found = self._find(round_id)
            if found is not None:
                return found
            if not self.implicit_rounds:
                raise UnknownRound(f"no round {round_id}; rounds are opened by the operator")
            self._check_can_open(client_id)
            return self._new_round(round_id, self.defaults, opened_by=client_id)

    @contextlib.contextmanager
    def _one_stream(self, round_id: str, client_id: str) -> Iterator[None]:
        """Hold the (round, site) slot while a submission is read: a site cannot make the
        aggregator buffer several copies of its update for one round."""
        key = (round_id, client_id)
        with self._lock:
            if key in self._streams:
                raise LimitExceeded(f"{client_id} is already streaming a submission to round {round_id}")
            self._streams.add(key)
        self.metrics.submissions_in_flight(1)
        try:
            yield
        finally:
            with self._lock:
                self._streams.discard(key)
            self.metrics.submissions_in_flight(-1)

    def _read_chunks(self, chunks: Iterable[tuple[int, bytes]], receipt: common_pb2.Receipt,
                     expected: int) -> tuple[list, float]:
        """Read and validate every chunk, keeping only the parsed form; also returns the time
        spent validating (not waiting for the network)."""
        digest = ChunkDigest()
        validation_seconds = 0.0
        held: list = []
        try:
            for index, data in chunks:
                self.metrics.bytes_ingested(len(data))
                if index != len(held) or index >= expected:
                    raise InvalidInput(f"expected chunk {len(held)} of {expected}")
                if len(data) > self.scheme.chunk_bytes:
                    raise PayloadTooLarge(f"chunk {index} has {len(data)} bytes; the limit is {self.scheme.chunk_bytes}")
                started = time.perf_counter()
                digest.update(index, data)
                held.append(self.scheme.parse_chunk(index, data, chunk_length(index, receipt.vector_length,
                                                                              self.scheme.chunk_values)))
                validation_seconds += time.perf_counter() - started
            if len(held) != expected:
                raise InvalidInput(f"stream ended after {len(held)} of {expected} chunks; nothing was added")
            if digest.digest() != receipt.digest:
                raise VerificationFailed("chunks do not match the signed digest")
        except BaseException:
            held.clear()  # released now, not when the traceback holding this frame is
            raise
        return held, validation_seconds

    def _accept(self, round_: Round, receipt: common_pb2.Receipt, held: list,
                validation_seconds: float) -> tuple[Round, int]:
        started = time.perf_counter()
        with self._lock:
            registered = self._find(round_.round_id)
            if registered is None:
                registered = self._register(round_)
        round_ = registered
        client_id = receipt.client_id
        with round_.changed:
            if round_.counted(receipt):
                return round_, len(round_.receipts)
            round_.check_accepts(receipt)
            first = round_.record.spec_hash is None
            if first:  # the round's shape is fixed from now on: concurrent others must match it
                round_.record.spec_hash, round_.record.vector_length = receipt.spec_hash, receipt.vector_length
            round_.adding.add(client_id)
            accumulator = round_.accumulator
        try:
            accumulator.add(held)  # outside the lock: other submissions add in parallel
        except Exception as exc:
            with round_.changed:
                round_.adding.discard(client_id)
                self._fail(round_, RoundFailed(f"adding a submission to round {round_.round_id} failed: {exc}"))
                self._wake(round_)
            raise round_.error() from None
        pause_point("submission.added")
        with round_.changed:
            round_.adding.discard(client_id)
            self._wake(round_)
            if round_.ended:
                raise round_.error()
            self._log(round_, Event(SUBMITTED, self.clock(), client_id, body=receipt.SerializeToString()))
            pause_point("submission.logged")
            if first:
                self.budget.know_submission_size(self._submission_bytes(receipt.vector_length))
            round_.receipts[client_id] = receipt
            round_.owed.pop(client_id, None)
            contributors = len(round_.receipts)
            round_.aggregation_seconds += validation_seconds + time.perf_counter() - started
            if self._is_full(round_):
                self._begin_close(round_)
            else:
                self._checkpoint_if_due(round_)
        return round_, contributors

    def _is_full(self, round_: Round) -> bool:
        if self.shard is not None:
            return False  # the coordinator closes sharded rounds
        expected = round_.scheme_round.expected_submissions(round_.config.expected_clients)
        return bool(expected) and len(round_.receipts) >= expected

    # -- checkpoints and closing ---------------------------------------------------------

    def _quiesce(self, round_: Round) -> None:
        """Wait until no submission is being added. The caller holds the round's lock."""
        round_.changed.wait_for(lambda: not round_.adding)

    def _checkpoint_if_due(self, round_: Round, always: bool = False) -> None:
        """Checkpoint an open round's sum when it holds new submissions and `checkpoint_seconds`
        passed since the last one (or `always`). The caller holds the round's lock."""
        now = self.clock()
        if len(round_.receipts) <= round_.checkpointed_count or (
                not always and now - round_.checkpointed_at < self.checkpoint_seconds):
            return
        self._quiesce(round_)
        if round_.state != OPEN:
            return
        contributors = sorted(round_.receipts)
        try:
            self.store.save_checkpoint(round_.record, contributors, round_.accumulator.snapshot())
        except OSError:
            log.exception("checkpoint of round %s failed; the clients still hold their updates", round_.round_id)
            return
        round_.checkpointed_at, round_.checkpointed_count = now, len(contributors)

    def _begin_close(self, round_: Round) -> None:
        """Move the round to closing (it refuses new submissions from now on), then checkpoint
        its sum and reveal it on a thread of its own. The caller holds the round's lock.

        The submission that filled the round is acknowledged without waiting for the close
        checkpoint: it is durable in the round's log already. A crash before the checkpoint is
        recorded leaves an open round whose last clients are owed and resend, as a crash just
        before the close would."""
        if round_.state != OPEN or self._draining.is_set():  # a draining engine leaves it to the next start
            return
        round_.record.state = CLOSING  # refuses new submissions while the adds in progress finish
        round_.close_pending = True
        round_.now = self.clock()
        self._reveal_in_background(round_, checkpoint=True)

    def _checkpoint_close(self, round_: Round) -> bool:
        """Once the adds in progress are done, record the sum with its contributors and the
        round as closing, in one step; False if the round ended instead."""
        with round_.changed:
            try:
                return self._record_close(round_)
            finally:
                round_.close_pending = False
                self._wake(round_)

    def _record_close(self, round_: Round) -> bool:
        """`_checkpoint_close`'s work; the caller holds the round's lock."""
        self._quiesce(round_)
        if round_.ended:
            return False
        contributors = sorted(round_.receipts)
        try:
            self.store.save_checkpoint(round_.record, contributors, round_.accumulator.snapshot(),
                                       closed=Event(CLOSED, round_.now))
        except Exception as exc:
            log.exception("cannot checkpoint round %s for closing", round_.round_id)
            self._fail(round_, RoundFailed(f"the aggregator could not record the close of round {round_.round_id}: "
                                           f"{exc}"))
            return False
        pause_point("round.closing")
        self.metrics.stage_finished(COLLECT, max(0.0, self.clock() - round_.record.opened_at))
        round_.scheme_round.begin_reveal(contributors)
        return True

    def _reveal_in_background(self, round_: Round, checkpoint: bool = False) -> None:
        """`checkpoint`: the close is not recorded yet (a round recovered as closing has it)."""
        closer = threading.Thread(target=self._close, args=(round_, checkpoint), name=f"close-{round_.round_id}",
                                  daemon=True)
        with self._lock:
            self._closing.add(closer)
        closer.start()

    def _close(self, round_: Round, checkpoint: bool) -> None:
        try:
            if not checkpoint or self._checkpoint_close(round_):
                self._reveal(round_)
        finally:
            with self._lock:
                self._closing.discard(threading.current_thread())

    def _reveal(self, round_: Round) -> None:
        with round_.changed:
            while not (round_.ended or round_.scheme_round.reveal_ready(self.clock())):
                round_.changed.wait(_TICK_SECONDS)
            if round_.ended or self._stopped.is_set():  # the scheme gave up, or the next engine reveals
                return
            receipts = [round_.receipts[client_id] for client_id in sorted(round_.receipts)]
        started = time.perf_counter()
        try:
            pause_point("reveal.started")
            total = round_.scheme_round.reveal(round_.accumulator, round_.record.vector_length,
                                               round_.record.spec_hash, receipts)
            pause_point("reveal.done")
            weight = float(total[-1])
            if not weight > 0:
                raise RoundFailed(f"total weight of round {round_.round_id} is {weight}; nothing to average")
            average = (total[:-1] / weight).astype(self.scheme.result_dtype)
        except SecureFLError as exc:
            with round_.changed:
                self._fail(round_, exc)
            return
        except Exception as exc:  # never leave waiting clients hanging
            log.exception("revealing round %s failed", round_.round_id)
            with round_.changed:
                self._fail(round_, RoundFailed(f"revealing the aggregate failed: {type(exc).__name__}"))
            return
        revealed = time.perf_counter()
        round_.reveal_seconds = revealed - started
        with round_.changed:
            finished = dataclasses.replace(
                round_.record, state=COMPLETE, total_weight=weight, contributors=len(receipts),
                signatures={receipt.client_id: receipt.signature for receipt in receipts},
                result_dtype=average.dtype.str)
            try:
                self.store.finish_round(finished, result=average)
            except Exception as exc:
                log.exception("cannot store the result of round %s", round_.round_id)
                self._fail(round_, RoundFailed(f"the aggregator could not store the result of round "
                                               f"{round_.round_id}: {exc}"))
                return
            pause_point("result.stored")
            round_.average = average
            round_.record = finished  # complete, with its result, in one step for readers without the lock
            round_.accumulator = None
            self._ended(round_, COMPLETED, None)
            self._wake(round_)
        self.metrics.stage_finished(REVEAL, round_.reveal_seconds)
        log.info("round %s complete: %d contributors, total weight %g; revealed in %.3f s, stored in %.3f s",
                 round_.round_id, len(receipts), weight, revealed - started, time.perf_counter() - revealed)
        self.store.purge(round_.record)

    def _fail(self, round_: Round, error: Exception) -> None:
        """End the round with `error`. The caller holds the round's lock."""
        if round_.ended:
            return
        if not isinstance(error, SecureFLError):
            error = RoundFailed(str(error))
        log.warning("round %s failed: %s", round_.round_id, error)
        record = round_.record
        record.error_type, record.error_message = type(error).__name__, str(error)
        record.contributors, record.state = len(round_.receipts), FAILED
        self.store.finish_round(record)
        round_.accumulator = None
        self._ended(round_, FAILURE, type(error).__name__)
        self._wake(round_)
        self.store.purge(round_.record)

    def _ended(self, round_: Round, outcome: str, reason: str | None) -> None:
        """Note the end of a round (for its eviction and the metrics). The caller holds the
        round's lock."""
        round_.ended_at = self.clock()
        self.metrics.round_ended(outcome, reason, max(0.0, round_.ended_at - round_.record.opened_at))
        with self._lock:
            self.metrics.open_rounds(sum(not r.ended for r in self._rounds.values()))

    def tick(self) -> None:
        """Apply every deadline that has passed: the schemes' stage deadlines and the rounds'
        submission deadlines; checkpoint open rounds that are due. The engine's own thread
        calls this; a transport without threads may call it instead."""
        now = self.clock()
        with self._lock:
            self._evict(now)
            live = [r for r in self._rounds.values() if not r.ended]
        for round_ in live:
            with round_.changed:
                if round_.ended:
                    continue
                try:
                    self._tick_round(round_, now)
                except SecureFLError:
                    continue  # the round failed and says why to its clients

    def _tick_round(self, round_: Round, now: float) -> None:
        round_.now = now
        if round_.scheme_round.tick(now):
            self._log(round_, Event(TICKED, now))
        self._scheme_changed(round_)
        if round_.state != OPEN:
            return
        self._checkpoint_if_due(round_)
        if self.shard is not None:
            return  # the coordinator applies sharded rounds' deadlines
        deadline = round_.scheme_round.submission_deadline(round_.record.opened_at, round_.config.timeout_seconds)
        if deadline is None or now < deadline or (round_.owed and now < round_.resume_until):
            return
        if len(round_.receipts) >= round_.config.min_clients:
            self._begin_close(round_)
        else:
            self._fail(round_, QuorumTimeout(
                f"round {round_.round_id} reached its deadline with {len(round_.receipts)} of "
                f"{round_.config.min_clients} required contributions; nothing was revealed"
            ))

    def _evict(self, now: float) -> None:
        """Drop the rounds that ended more than the retention period ago from memory (their
        outcome stays in the store, where `_find` reads it). The caller holds the engine lock."""
        expired = [round_id for round_id, r in self._rounds.items()
                   if r.ended_at is not None and now - r.ended_at >= self.limits.retention_seconds]
        for round_id in expired:
            del self._rounds[round_id]

    def _watch(self) -> None:
        while not self._stopped.wait(_TICK_SECONDS):
            self.tick()

    # -- results -------------------------------------------------------------------------

    def wait(self, round_: Round, timeout: float) -> bool:
        """Block until the round ends or `timeout` passes; True when it ended."""
        with round_.changed:
            return round_.moved.wait_for(lambda: round_.ended, timeout)

    def settle(self, round_: Round, timeout: float) -> bool:
        """Block until a close under way is recorded (and its next stage, if any, is up), or
        `timeout` passes; True when nothing is pending. For drivers with a manual clock, which
        must not move time past a stage that is about to begin."""
        with round_.changed:
            return round_.changed.wait_for(lambda: not round_.close_pending, timeout)

    def result(self, round_: Round) -> Result:
        if round_.state == FAILED:
            raise round_.error()
        if round_.state != COMPLETE:
            raise RoundClosed(f"round {round_.round_id} has not completed")
        if round_.average is None:  # completed before a restart
            round_.average = self.store.result(round_.record)
        record = round_.record
        return Result(round_.average, record.total_weight or 0.0, record.contributors or 0, sorted(record.signatures or {}))

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild rounds from the store: unfinished rounds get their checkpointed sum back and
        their log replayed into a fresh server round; clients counted after the checkpoint are
        owed and resend their updates."""
        for record in self.store.rounds():
            self._seq = max(self._seq, record.seq)
            if record.state in (COMPLETE, FAILED):  # read from the store when asked for (`_find`)
                self.store.purge(record)  # in case a crash came before the purge
                continue
            round_ = Round(record, self.scheme)
            self._rounds[record.round_id] = round_
            with round_.changed:
                try:
                    self._replay(round_)
                except SecureFLError as exc:
                    self._fail(round_, exc)
                    continue
                if record.vector_length:
                    self.budget.know_submission_size(self._submission_bytes(record.vector_length))
                log.info("recovered round %s (%s): %d submissions in its sum, %d owed", record.round_id,
                         record.state, len(round_.receipts), len(round_.owed))
                round_.resume_until = self.clock() + self.resubmit_grace
                self._follow_coordinator(round_)
                if record.state == CLOSING:
                    self._reveal_in_background(round_)
                elif self._is_full(round_):
                    self._begin_close(round_)

    def _replay(self, round_: Round) -> None:
        checkpoint = self.store.checkpoint(round_.round_id)
        in_sum = set(checkpoint.contributors) if checkpoint else set()
        if checkpoint is not None:
            round_.accumulator.restore(checkpoint.chunks)
            round_.checkpointed_count = len(in_sum)
        for event in self.store.events(round_.record):
            round_.now = event.at
            if event.kind == SUBMITTED:
                receipt = common_pb2.Receipt.FromString(event.body)
                (round_.receipts if event.client_id in in_sum else round_.owed)[event.client_id] = receipt
                if round_.record.spec_hash is None:  # the first counted submission fixed the shape
                    round_.record.spec_hash, round_.record.vector_length = receipt.spec_hash, receipt.vector_length
            elif event.kind == ANSWERED:
                round_.scheme_round.answer(event.client_id, event.stage, event.body)
                round_.answers[(event.client_id, event.stage)] = event.body
            elif event.kind == TICKED:
                round_.scheme_round.tick(event.at)
            elif event.kind == JOINED:
                round_.joined.add(event.client_id)
            elif event.kind == CLOSED and round_.state == CLOSING:  # else its checkpoint was never recorded
                round_.scheme_round.begin_reveal(sorted(round_.receipts))
        if set(round_.receipts) != in_sum:
            raise RoundFailed(f"the log of round {round_.round_id} does not match its checkpoint")
        if round_.scheme_round.failure is not None:
            raise round_.scheme_round.failure

    # -- sharded rounds ------------------------------------------------------------------

    def _follow_coordinator(self, round_: Round) -> None:
        """A sharded round closes when the coordinator fixed its contributors and this shard's
        sum holds exactly them (clients owed after a restart resend first)."""
        if self.shard is None or round_.state != OPEN:
            return
        threading.Thread(target=self._await_contributors, args=(round_,), name=f"coordinated-{round_.round_id}",
                         daemon=True).start()

    def _await_contributors(self, round_: Round) -> None:
        assert self.shard is not None
        coordinated_round = self.shard.round_of(round_.round_id)
        contributors: list[str] | None = None
        while contributors is None:
            if self._stopped.is_set() or round_.ended:
                return
            try:
                contributors = self.shard.coordinator.await_close(coordinated_round, _COORDINATOR_POLL_SECONDS)
            except SecureFLError as exc:
                with round_.changed:
                    self._fail(round_, exc)
                return
            except Exception:
                log.exception("the coordinator of round %s is unreachable; asking again", round_.round_id)
                self._stopped.wait(_COORDINATOR_POLL_SECONDS)
        with round_.changed:
            holds_them = round_.changed.wait_for(
                lambda: round_.ended or set(contributors) <= set(round_.receipts), self.resubmit_grace)
            if round_.ended:
                return
            if not holds_them or set(round_.receipts) != set(contributors):
                self._fail(round_, RoundFailed(f"shard round {round_.round_id} does not hold exactly the clients "
                                               f"the coordinator committed; nothing was revealed"))
            else:
                self._begin_close(round_)

    # -- shutting down -------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def _refuse_new_work(self) -> None:
        if self._draining.is_set():
            raise ServiceUnavailable("the aggregator is shutting down; try again once it is back")

    def drain(self) -> None:
        """Start a shutdown: from now on no round opens, no submission starts, no reveal begins
        (a round that fills up now is closed at the next start, from the store), and stage waits
        return at once. Submissions already streaming are still accepted."""
        self._draining.set()
        self._stopped.set()
        with self._lock:
            rounds = list(self._rounds.values())
        for round_ in rounds:
            with round_.changed:
                round_.changed.notify_all()
                round_.moved.notify_all()  # every stage wait returns at once

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until no submission is streaming and no reveal runs;
        True when that happened (a draining engine starts neither)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = bool(self._streams) or any(closer.is_alive() for closer in self._closing)
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_TICK_SECONDS)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the deadline thread and wait up to `timeout` seconds for reveals under way;
        False if one is still running. After a `drain` (a graceful shutdown), checkpoint every
        open round's sum first, so the next start holds every acknowledged submission without
        its client resending it."""
        self._stopped.set()
        deadline = time.monotonic() + timeout
        if self._watcher.is_alive():
            self._watcher.join(timeout=timeout)
        if self._draining.is_set():
            with self._lock:
                live = [r for r in self._rounds.values() if r.state == OPEN]
            for round_ in live:
                with round_.changed:
                    self._checkpoint_if_due(round_, always=True)
        with self._lock:
            closing = list(self._closing)
        for closer in closing:
            closer.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(closer.is_alive() for closer in closing)
