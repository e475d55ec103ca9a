"""The round engine: opens, fills, closes and recovers rounds of any scheme, for any transport.

A round is `open` until it has all expected submissions, or its deadline passes with at least
`min_clients`; it is then `closing` while the sum is revealed (for HE: decrypted by the
key-holder; for SecAgg+: unmasked with the survivors' shares), and ends `complete` with the
published average or `failed` with an error.

Guarantees, whatever a transport or a caller does:

* a submission is checked completely (receipt signature, scheme, round, model spec, length,
  every chunk, digest) before anything about the round changes — not even its creation;
* an accepted submission is written to the store and added to the running sum under the
  round's lock, and only then acknowledged; acknowledged submissions are replayed after a
  restart;
* a scheme's stage messages are applied under the same lock, so a scheme's server half needs
  no locking of its own, and a bad message changes nothing;
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
from .chunks import ChunkDigest, chunk_count, chunk_length, float64_chunks
from .limits import RoundLimits
from .scheme import DONE, RoundConfig, ServerRound, ServerScheme, Stage
from .store import RoundRecord, RoundStore

log = logging.getLogger(__name__)

OPEN, CLOSING, COMPLETE, FAILED = "open", "closing", "complete", "failed"
MAX_VECTOR_LENGTH = 1 << 28  # larger models are refused before any work
MAX_CHUNK_BYTES = 1 << 20
_TICK_SECONDS = 0.05


@dataclass(frozen=True)
class Result:
    average: np.ndarray
    total_weight: float
    contributors: int


class Round:
    def __init__(self, record: RoundRecord, scheme: ServerScheme | None, opened_by: str | None = None) -> None:
        """`scheme` None: a round that ended, read back from the store (no sum, no stages)."""
        self.record = record
        self.config = RoundConfig(record.min_clients, record.expected_clients, record.timeout_seconds)
        self.receipts: dict[str, common_pb2.Receipt] = {}
        self.joined: set[str] = set()  # sites that joined (interactive schemes join before their stages)
        self.opened_by = opened_by  # the site whose request created the round; None: an operator or a restart
        self.accumulator = scheme.new_accumulator() if scheme is not None else None
        self.scheme_round: ServerRound | None = (
            scheme.new_round(record.round_id, self.config, record.opened_at) if scheme is not None else None)
        self.changed = threading.Condition(threading.RLock())
        self.average: np.ndarray | None = None
        self.ended_at: float | None = None  # by the engine's clock; finished rounds leave memory after retention
        self.aggregation_seconds = 0.0  # operational metrics, not persisted
        self.reveal_seconds = 0.0

    @classmethod
    def ended_from_store(cls, record: RoundRecord, receipts: Iterable[bytes]) -> Round:
        round_ = cls(record, None)
        for receipt_bytes in receipts:
            receipt = common_pb2.Receipt.FromString(receipt_bytes)
            round_.receipts[receipt.client_id] = receipt
        return round_

    @property
    def round_id(self) -> str:
        return self.record.round_id

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def ended(self) -> bool:
        return self.state in (COMPLETE, FAILED)

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
        self.scheme_round.admit(receipt.client_id)

    def error(self) -> SecureFLError:
        return error_named(self.record.error_type, self.record.error_message or "round failed", RoundFailed)


class RoundEngine:
    """Thread-safe. `clock` is injectable so tests of deadlines are deterministic."""

    def __init__(self, scheme: ServerScheme, store: RoundStore, roster: Roster, defaults: RoundConfig,
                 implicit_rounds: bool = True, clock: Callable[[], float] = time.time, watch: bool = True,
                 limits: RoundLimits = RoundLimits(), metrics: RoundMetrics = NO_METRICS) -> None:
        """`watch`: apply deadlines on a thread of the engine's own; without it the driver calls
        `tick` (in-process runs with a manual clock)."""
        self.scheme = scheme
        self.store = store
        self.roster = roster
        self.defaults = defaults.validate()
        self.implicit_rounds = implicit_rounds
        self.clock = clock
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
        record = RoundRecord(round_id, 0, OPEN, config.min_clients, config.expected_clients,
                             config.timeout_seconds, self.clock())
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
        if record is None:
            return None
        return Round.ended_from_store(record, (receipt for _, receipt in self.store.submissions(round_id)))

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
            found.joined.add(client_id)
        return found

    def get(self, round_id: str) -> Round:
        check_identifier(round_id, "round id")
        with self._lock:
            found = self._find(round_id)
        if found is None:
            raise UnknownRound(f"no round {round_id}")
        return found

    def check_participant(self, round_: Round, client_id: str) -> None:
        """Raise PermissionDenied unless the site joined or contributed to the round."""
        if client_id not in round_.joined and client_id not in round_.receipts:
            raise PermissionDenied(f"{client_id} takes no part in round {round_.round_id}")

    def check_contributor(self, round_: Round, client_id: str) -> None:
        """Raise PermissionDenied unless the site's submission is part of the round: only
        contributors receive a round's result."""
        if client_id not in round_.receipts:
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
                    if client_id not in round_.receipts:
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
                round_.changed.wait(remaining)

    def answer_stage(self, round_id: str, client_id: str, stage: str, body: bytes) -> None:
        """Apply a client's reply to a stage of the round's scheme. A failed round raises its
        error, so a client answering too late learns why the round ended."""
        self._check_enrolled(client_id)
        round_ = self.get(round_id)
        self.check_participant(round_, client_id)
        with round_.changed:
            if round_.state == FAILED:
                raise round_.error()
            if round_.ended:
                raise RoundClosed(f"round {round_id} has ended")
            round_.scheme_round.answer(client_id, stage, body)
            self._scheme_changed(round_)

    def _scheme_changed(self, round_: Round) -> None:
        """After the scheme's state moved: wake the waiters, and fail the round if the scheme
        gave up on it. The caller holds the round's lock."""
        if round_.scheme_round.failure is not None and not round_.ended:
            self._fail(round_, round_.scheme_round.failure)
        round_.changed.notify_all()

    # -- submissions ---------------------------------------------------------------------

    def submit(self, receipt: common_pb2.Receipt, announced_chunks: int,
               chunks: Iterable[tuple[int, bytes]]) -> tuple[Round, int]:
        """Validate a whole submission (receipt, then every chunk as it streams in), make it
        durable and add it to the round's sum. Returns the round and its contributor count.
        Nothing about any round changes unless every check passes."""
        try:
            return self._submit(receipt, announced_chunks, chunks)
        except SecureFLError as exc:
            self.metrics.submission_refused(type(exc).__name__)
            raise

    def _submit(self, receipt: common_pb2.Receipt, announced_chunks: int,
                chunks: Iterable[tuple[int, bytes]]) -> tuple[Round, int]:
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
        with round_.changed:
            round_.check_accepts(receipt)  # fail fast; checked again under the lock before adding
        with self._one_stream(round_.round_id, receipt.client_id):
            parsed, raw, validation_seconds = self._read_chunks(chunks, receipt, expected)
            round_, contributors = self._accept(round_, receipt, raw, parsed, validation_seconds)
        self.metrics.submission_accepted()
        self.metrics.stage_finished(SUBMISSION, validation_seconds)
        log.info("round %s: accepted %s (%d contributors)", round_.round_id, receipt.client_id, contributors)
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
                     expected: int) -> tuple[list, list[bytes], float]:
        """Read and validate every chunk; also returns the time spent validating (not waiting
        for the network)."""
        digest = ChunkDigest()
        validation_seconds = 0.0
        raw: list[bytes] = []
        parsed = []
        for index, data in chunks:
            self.metrics.bytes_ingested(len(data))
            if index != len(raw) or index >= expected:
                raise InvalidInput(f"expected chunk {len(raw)} of {expected}")
            if len(data) > MAX_CHUNK_BYTES:
                raise PayloadTooLarge(f"chunk {index} has {len(data)} bytes; the limit is {MAX_CHUNK_BYTES}")
            started = time.perf_counter()
            digest.update(index, data)
            values = chunk_length(index, receipt.vector_length, self.scheme.chunk_values)
            parsed.append(self.scheme.parse_chunk(index, data, values))
            validation_seconds += time.perf_counter() - started
            raw.append(data)
        if len(raw) != expected:
            raise InvalidInput(f"stream ended after {len(raw)} of {expected} chunks; nothing was added")
        if digest.digest() != receipt.digest:
            raise VerificationFailed("chunks do not match the signed digest")
        return parsed, raw, validation_seconds

    def _accept(self, round_: Round, receipt: common_pb2.Receipt, raw_chunks: list[bytes], parsed_chunks: list,
                validation_seconds: float) -> tuple[Round, int]:
        started = time.perf_counter()
        with self._lock:
            registered = self._find(round_.round_id)
            if registered is None:
                registered = self._register(round_)
        round_ = registered
        with round_.changed:
            round_.check_accepts(receipt)
            self.store.add_submission(round_.round_id, receipt.client_id, receipt.SerializeToString(),
                                      raw_chunks, receipt.vector_length, receipt.spec_hash)
            self._add(round_, receipt, parsed_chunks)
            contributors = len(round_.receipts)
            round_.aggregation_seconds += validation_seconds + time.perf_counter() - started
            if self._is_full(round_):
                self._begin_close(round_)
            round_.changed.notify_all()
        return round_, contributors

    def _add(self, round_: Round, receipt: common_pb2.Receipt, parsed_chunks: list) -> None:
        round_.accumulator.add(parsed_chunks)
        round_.receipts[receipt.client_id] = receipt
        round_.record.spec_hash = receipt.spec_hash
        round_.record.vector_length = receipt.vector_length

    def _is_full(self, round_: Round) -> bool:
        expected = round_.scheme_round.expected_submissions(round_.config.expected_clients)
        return bool(expected) and len(round_.receipts) >= expected

    # -- closing -------------------------------------------------------------------------

    def _begin_close(self, round_: Round) -> None:
        """Move an open round to closing and reveal its sum on a thread of its own. The caller
        holds the round's lock."""
        if round_.state != OPEN or self._draining.is_set():  # a draining engine leaves it to the next start
            return
        round_.record.state = CLOSING
        self.store.set_state(round_.round_id, CLOSING)
        self.metrics.stage_finished(COLLECT, max(0.0, self.clock() - round_.record.opened_at))
        round_.scheme_round.begin_reveal(sorted(round_.receipts))
        round_.changed.notify_all()
        closer = threading.Thread(target=self._close, args=(round_,), name=f"close-{round_.round_id}", daemon=True)
        with self._lock:
            self._closing.add(closer)
        closer.start()

    def _close(self, round_: Round) -> None:
        try:
            self._reveal(round_)
        finally:
            with self._lock:
                self._closing.discard(threading.current_thread())

    def _reveal(self, round_: Round) -> None:
        with round_.changed:
            while not round_.ended and not round_.scheme_round.reveal_ready(self.clock()):
                round_.changed.wait(_TICK_SECONDS)
            if round_.ended:  # the scheme gave up while revealing
                return
            receipts = list(round_.receipts.values())
        started = time.perf_counter()
        try:
            total = round_.scheme_round.reveal(round_.accumulator, round_.record.vector_length,
                                               round_.record.spec_hash, receipts)
            weight = float(total[-1])
            if not weight > 0:
                raise RoundFailed(f"total weight of round {round_.round_id} is {weight}; nothing to average")
            average = total[:-1] / weight
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
        self.store.finish_round(round_.round_id, result_chunks=float64_chunks(average), total_weight=weight,
                                contributors=len(receipts))
        with round_.changed:
            round_.average = average
            round_.accumulator = None
            round_.record.total_weight, round_.record.contributors = weight, len(receipts)
            round_.record.state = COMPLETE
            self._ended(round_, COMPLETED, None)
            round_.changed.notify_all()
        self.metrics.stage_finished(REVEAL, round_.reveal_seconds)
        log.info("round %s complete: %d contributors, total weight %g; revealed in %.3f s, stored in %.3f s",
                 round_.round_id, len(receipts), weight, revealed - started, time.perf_counter() - revealed)
        self.store.purge_submissions(round_.round_id)

    def _fail(self, round_: Round, error: Exception) -> None:
        """End the round with `error`. The caller holds the round's lock."""
        if round_.ended:
            return
        if not isinstance(error, SecureFLError):
            error = RoundFailed(str(error))
        log.warning("round %s failed: %s", round_.round_id, error)
        self.store.finish_round(round_.round_id, contributors=len(round_.receipts),
                                error=(type(error).__name__, str(error)))
        round_.accumulator = None
        round_.record.error_type, round_.record.error_message = type(error).__name__, str(error)
        round_.record.contributors = len(round_.receipts)
        round_.record.state = FAILED
        self._ended(round_, FAILURE, type(error).__name__)
        round_.changed.notify_all()
        self.store.purge_submissions(round_.round_id)

    def _ended(self, round_: Round, outcome: str, reason: str | None) -> None:
        """Note the end of a round (for its eviction and the metrics). The caller holds the
        round's lock."""
        round_.ended_at = self.clock()
        self.metrics.round_ended(outcome, reason, max(0.0, round_.ended_at - round_.record.opened_at))
        with self._lock:
            self.metrics.open_rounds(sum(not r.ended for r in self._rounds.values()))

    def tick(self) -> None:
        """Apply every deadline that has passed: the schemes' stage deadlines and the rounds'
        submission deadlines. The engine's own thread calls this; a transport without threads
        may call it instead."""
        now = self.clock()
        with self._lock:
            self._evict(now)
            live = [r for r in self._rounds.values() if not r.ended]
        for round_ in live:
            with round_.changed:
                if round_.ended:
                    continue
                round_.scheme_round.tick(now)
                self._scheme_changed(round_)
                if round_.state != OPEN:
                    continue
                deadline = round_.scheme_round.submission_deadline(round_.record.opened_at,
                                                                   round_.config.timeout_seconds)
                if deadline is None or now < deadline:
                    continue
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
            return round_.changed.wait_for(lambda: round_.ended, timeout)

    def result(self, round_: Round) -> Result:
        if round_.state == FAILED:
            raise round_.error()
        if round_.state != COMPLETE:
            raise RoundClosed(f"round {round_.round_id} has not completed")
        if round_.average is None:  # completed before a restart
            chunks = self.store.result_chunks(round_.round_id)
            round_.average = np.frombuffer(b"".join(chunks), dtype="<f8")
        return Result(round_.average, round_.record.total_weight or 0.0, round_.record.contributors or 0)

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild rounds from the store: replay acknowledged submissions of unfinished rounds."""
        for record in self.store.rounds():
            self._seq = max(self._seq, record.seq)
            if record.state in (COMPLETE, FAILED):  # read from the store when asked for (`_find`)
                self.store.purge_submissions(record.round_id)  # in case a crash came before the purge
                continue
            round_ = Round(record, self.scheme)
            self._rounds[record.round_id] = round_
            if not self.scheme.survives_restart:
                self._fail(round_, RoundFailed(f"round {record.round_id} was interrupted by an aggregator restart"))
                continue
            for client_id, receipt_bytes in self.store.submissions(record.round_id):
                receipt = common_pb2.Receipt.FromString(receipt_bytes)
                chunks = [
                    self.scheme.parse_chunk(index, data, chunk_length(index, record.vector_length, self.scheme.chunk_values))
                    for index, data in enumerate(self.store.submission_chunks(record.round_id, client_id))
                ]
                self._add(round_, receipt, chunks)
            log.info("recovered round %s with %d submissions", record.round_id, len(round_.receipts))
            if record.state == CLOSING:  # crashed while revealing: try again
                record.state = OPEN
                with round_.changed:
                    self._begin_close(round_)
            elif self._is_full(round_):
                with round_.changed:
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
        False if one is still running."""
        self._stopped.set()
        deadline = time.monotonic() + timeout
        if self._watcher.is_alive():
            self._watcher.join(timeout=timeout)
        with self._lock:
            closing = list(self._closing)
        for closer in closing:
            closer.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(closer.is_alive() for closer in closing)
