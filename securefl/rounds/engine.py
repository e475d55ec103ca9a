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
  no locking of its own, and a bad message changes nothing.

Transports authenticate callers and pass the authenticated client id; the engine never takes a
client's identity from anything it cannot trust."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, PayloadTooLarge, PermissionDenied, QuorumTimeout, RoundClosed,
    RoundExists,
    RoundFailed, SecureFLError, SpecMismatch, UnknownClient, UnknownRound, VerificationFailed, error_named,
)
from ..identity import Roster, check_identifier, verify_receipt
from ..v1 import common_pb2
from .chunks import ChunkDigest, chunk_count, chunk_length, float64_chunks
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
    def __init__(self, record: RoundRecord, scheme: ServerScheme) -> None:
        self.record = record
        self.config = RoundConfig(record.min_clients, record.expected_clients, record.timeout_seconds)
        self.receipts: dict[str, common_pb2.Receipt] = {}
        self.joined: set[str] = set()  # sites that joined (interactive schemes join before their stages)
        self.accumulator = scheme.new_accumulator()
        self.scheme_round: ServerRound = scheme.new_round(record.round_id, self.config, record.opened_at)
        self.changed = threading.Condition(threading.RLock())
        self.average: np.ndarray | None = None
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
                 implicit_rounds: bool = True, clock: Callable[[], float] = time.time, watch: bool = True) -> None:
        """`watch`: apply deadlines on a thread of the engine's own; without it the driver calls
        `tick` (in-process runs with a manual clock)."""
        self.scheme = scheme
        self.store = store
        self.roster = roster
        self.defaults = defaults.validate()
        self.implicit_rounds = implicit_rounds
        self.clock = clock
        self._rounds: dict[str, Round] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._stopped = threading.Event()
        self._recover()
        self._watcher = threading.Thread(target=self._watch, name="round-deadlines", daemon=True)
        if watch:
            self._watcher.start()

    # -- opening -------------------------------------------------------------------------

    def open_round(self, round_id: str | None, config: RoundConfig | None) -> Round:
        config = (config or self.defaults).validate()
        if round_id is not None:
            check_identifier(round_id, "round id")
        with self._lock:
            if round_id is not None and round_id in self._rounds:
                raise RoundExists(f"round {round_id} already exists")
            return self._register(self._new_round(round_id, config))

    def _new_round(self, round_id: str | None, config: RoundConfig) -> Round:
        """A round object that is not yet registered nor stored."""
        round_id = round_id if round_id is not None else f"round-{self._seq + 1:06d}"
        record = RoundRecord(round_id, 0, OPEN, config.min_clients, config.expected_clients,
                             config.timeout_seconds, self.clock())
        return Round(record, self.scheme)

    def _register(self, round_: Round) -> Round:
        """Store and publish a new round; the caller holds the engine lock."""
        self._seq += 1
        round_.record.seq = self._seq
        self.store.create_round(round_.record)
        self._rounds[round_.round_id] = round_
        log.info("opened round %s (%s)", round_.round_id, round_.config)
        return round_

    def join(self, client_id: str, round_id: str | None = None) -> Round:
        """The round named (opened with the defaults if rounds open implicitly), or else the
        oldest open round this client has not contributed to, or a new one."""
        self._check_enrolled(client_id)
        if round_id is not None:
            check_identifier(round_id, "round id")
        with self._lock:
            if round_id is not None:
                found = self._rounds.get(round_id)
                if found is None and not self.implicit_rounds:
                    raise UnknownRound(f"no round {round_id}; rounds are opened by the operator")
                found = found or self._register(self._new_round(round_id, self.defaults))
            else:
                found = next((r for r in self._rounds.values() if r.state == OPEN and client_id not in r.receipts),
                             None) or self._register(self._new_round(None, self.defaults))
        with found.changed:
            found.joined.add(client_id)
        return found

    def get(self, round_id: str) -> Round:
        check_identifier(round_id, "round id")
        with self._lock:
            found = self._rounds.get(round_id)
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
        verify_receipt(self.roster, receipt)
        if receipt.scheme != self.scheme.name:
            raise SpecMismatch(f"this aggregator runs scheme {self.scheme.name!r}, not {receipt.scheme!r:.40}")
        if not 2 <= receipt.vector_length <= MAX_VECTOR_LENGTH:
            raise PayloadTooLarge(f"vector length {receipt.vector_length} is outside [2, {MAX_VECTOR_LENGTH}]")
        expected = chunk_count(receipt.vector_length, self.scheme.chunk_values)
        if announced_chunks != expected:
            raise LengthMismatch(f"{announced_chunks} chunks announced; length {receipt.vector_length} needs {expected}")
        round_ = self._round_for_submission(receipt.round_id)
        with round_.changed:
            round_.check_accepts(receipt)  # fail fast; checked again under the lock before adding
        parsed, raw, validation_seconds = self._read_chunks(chunks, receipt, expected)
        round_, contributors = self._accept(round_, receipt, raw, parsed, validation_seconds)
        log.info("round %s: accepted %s (%d contributors)", round_.round_id, receipt.client_id, contributors)
        return round_, contributors

    def _round_for_submission(self, round_id: str) -> Round:
        """The existing round, or (implicit rounds) a new one that is registered only when its
        first submission is accepted."""
        check_identifier(round_id, "round id")
        with self._lock:
            found = self._rounds.get(round_id)
        if found is not None:
            return found
        if not self.implicit_rounds:
            raise UnknownRound(f"no round {round_id}; rounds are opened by the operator")
        return self._new_round(round_id, self.defaults)

    def _read_chunks(self, chunks: Iterable[tuple[int, bytes]], receipt: common_pb2.Receipt,
                     expected: int) -> tuple[list, list[bytes], float]:
        """Read and validate every chunk; also returns the time spent validating (not waiting
        for the network)."""
        digest = ChunkDigest()
        validation_seconds = 0.0
        raw: list[bytes] = []
        parsed = []
        for index, data in chunks:
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
            registered = self._rounds.get(round_.round_id)
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
        if round_.state != OPEN:
            return
        round_.record.state = CLOSING
        self.store.set_state(round_.round_id, CLOSING)
        round_.scheme_round.begin_reveal(sorted(round_.receipts))
        round_.changed.notify_all()
        threading.Thread(target=self._close, args=(round_,), name=f"close-{round_.round_id}", daemon=True).start()

    def _close(self, round_: Round) -> None:
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
            round_.changed.notify_all()
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
        round_.changed.notify_all()
        self.store.purge_submissions(round_.round_id)

    def tick(self) -> None:
        """Apply every deadline that has passed: the schemes' stage deadlines and the rounds'
        submission deadlines. The engine's own thread calls this; a transport without threads
        may call it instead."""
        now = self.clock()
        with self._lock:
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
            round_ = Round(record, self.scheme)
            self._rounds[record.round_id] = round_
            self._seq = max(self._seq, record.seq)
            if round_.ended:
                self.store.purge_submissions(record.round_id)  # in case a crash came before the purge
                continue
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

    def stop(self) -> None:
        self._stopped.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=2)
