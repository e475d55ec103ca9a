"""Round state for the untrusted aggregator.

A round is `open` until it has all expected clients, or its deadline passes with at least
`min_clients`; it is then `closing` while the sum is revealed (for CKKS: decrypted by the
key-holder), and ends `complete` with the published average or `failed` with an error. A
submission is checked completely (signature, round, spec, length, every chunk, digest) before
anything about the round changes, then written to the store and added to the running sum
under the round's lock, and only then acknowledged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, QuorumTimeout, RoundClosed, RoundExists,
    RoundFailed, SecureFLError, SpecMismatch, UnknownRound, error_named,
)
from ..identity import check_identifier
from ..schemes import AggregationScheme, chunk_length, float64_chunks
from ..v1 import common_pb2
from .store import RoundRecord, RoundStore

log = logging.getLogger(__name__)

OPEN, CLOSING, COMPLETE, FAILED = "open", "closing", "complete", "failed"


@dataclass(frozen=True)
class RoundConfig:
    min_clients: int
    expected_clients: int = 0  # 0: close only on the deadline
    timeout_seconds: float = 0.0  # 0: no deadline

    def validate(self) -> RoundConfig:
        if self.min_clients < 1:
            raise InvalidInput("min_clients must be at least 1")
        if self.expected_clients and self.expected_clients < self.min_clients:
            raise InvalidInput("expected_clients must be 0 or at least min_clients")
        if self.timeout_seconds < 0:
            raise InvalidInput("timeout_seconds must not be negative")
        if not self.expected_clients and not self.timeout_seconds:
            raise InvalidInput("a round needs expected_clients or a timeout, or it can never close")
        return self


class Round:
    def __init__(self, record: RoundRecord, scheme: AggregationScheme) -> None:
        self.record = record
        self.config = RoundConfig(record.min_clients, record.expected_clients, record.timeout_seconds)
        self.receipts: dict[str, common_pb2.Receipt] = {}
        self.accumulator = scheme.new_accumulator()
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.average: np.ndarray | None = None
        self.aggregation_seconds = 0.0  # operational metrics, not persisted
        self.reveal_seconds = 0.0

    @property
    def round_id(self) -> str:
        return self.record.round_id

    @property
    def state(self) -> str:
        return self.record.state

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

    def error(self) -> SecureFLError:
        return error_named(self.record.error_type, self.record.error_message or "round failed", RoundFailed)


class RoundManager:
    """Opens, fills, closes and recovers rounds. Thread-safe."""

    def __init__(self, scheme: AggregationScheme, store: RoundStore, defaults: RoundConfig,
                 implicit_rounds: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.scheme = scheme
        self.store = store
        self.defaults = defaults.validate()
        self.implicit_rounds = implicit_rounds
        self.clock = clock
        self._rounds: dict[str, Round] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._stopped = threading.Event()
        self._recover()
        self._watcher = threading.Thread(target=self._watch_deadlines, name="round-deadlines", daemon=True)
        self._watcher.start()

    # -- opening -------------------------------------------------------------------------

    def open_round(self, round_id: str | None, config: RoundConfig | None) -> Round:
        config = (config or self.defaults).validate()
        with self._lock:
            if round_id is not None and round_id in self._rounds:
                raise RoundExists(f"round {round_id} already exists")
            return self._create(round_id, config)

    def _create(self, round_id: str | None, config: RoundConfig) -> Round:
        self._seq += 1
        round_id = check_identifier(round_id, "round id") if round_id is not None else f"round-{self._seq:06d}"
        record = RoundRecord(round_id, self._seq, OPEN, config.min_clients, config.expected_clients,
                             config.timeout_seconds, self.clock())
        self.store.create_round(record)
        self._rounds[round_id] = Round(record, self.scheme)
        log.info("opened round %s (%s)", round_id, config)
        return self._rounds[round_id]

    def join(self, client_id: str) -> Round:
        """The oldest open round this client has not contributed to; a new one if none."""
        with self._lock:
            for candidate in self._rounds.values():
                if candidate.state == OPEN and client_id not in candidate.receipts:
                    return candidate
            return self._create(None, self.defaults)

    def get(self, round_id: str) -> Round:
        check_identifier(round_id, "round id")
        with self._lock:
            found = self._rounds.get(round_id)
        if found is None:
            raise UnknownRound(f"no round {round_id}")
        return found

    def for_submission(self, round_id: str) -> Round:
        check_identifier(round_id, "round id")
        with self._lock:
            if round_id not in self._rounds:
                if not self.implicit_rounds:
                    raise UnknownRound(f"no round {round_id}; rounds are opened by the operator")
                self._create(round_id, self.defaults)
            return self._rounds[round_id]

    # -- submissions ---------------------------------------------------------------------

    def accept(self, round_: Round, receipt: common_pb2.Receipt, raw_chunks: list[bytes], parsed_chunks: list,
               validation_seconds: float = 0.0) -> int:
        """Make a fully validated submission durable, add it to the sum; return contributors."""
        started = time.perf_counter()
        with round_.lock:
            round_.check_accepts(receipt)
            self.scheme.check_submitter(round_.round_id, receipt.client_id)
            self.store.add_submission(round_.round_id, receipt.client_id, receipt.SerializeToString(),
                                      raw_chunks, receipt.vector_length, receipt.spec_hash)
            self._add(round_, receipt, parsed_chunks)
            contributors = len(round_.receipts)
            full = self._is_full(round_)
            round_.aggregation_seconds += validation_seconds + time.perf_counter() - started
        if full:
            self._begin_close(round_)
        return contributors

    def _is_full(self, round_: Round) -> bool:
        expected = self.scheme.expected_submissions(round_.round_id, round_.config.expected_clients)
        return bool(expected) and len(round_.receipts) >= expected

    def _deadline(self, round_: Round) -> float | None:
        return self.scheme.submission_deadline(round_.round_id, round_.record.opened_at, round_.config.timeout_seconds)

    def _add(self, round_: Round, receipt: common_pb2.Receipt, parsed_chunks: list) -> None:
        round_.accumulator.add(parsed_chunks)
        round_.receipts[receipt.client_id] = receipt
        round_.record.spec_hash = receipt.spec_hash
        round_.record.vector_length = receipt.vector_length

    # -- closing -------------------------------------------------------------------------

    def _begin_close(self, round_: Round) -> None:
        with round_.lock:
            if round_.state != OPEN:
                return
            round_.record.state = CLOSING
            self.store.set_state(round_.round_id, CLOSING)
        threading.Thread(target=self._close, args=(round_,), name=f"close-{round_.round_id}", daemon=True).start()

    def _close(self, round_: Round) -> None:
        receipts = list(round_.receipts.values())
        started = time.perf_counter()
        try:
            total = self.scheme.reveal(round_.accumulator, round_.round_id, round_.record.vector_length,
                                       round_.record.spec_hash, receipts)
            weight = float(total[-1])
            if not weight > 0:
                raise RoundFailed(f"total weight of round {round_.round_id} is {weight}; nothing to average")
            average = total[:-1] / weight
        except SecureFLError as exc:
            self._fail(round_, exc)
            return
        except Exception as exc:  # never leave waiting clients hanging
            log.exception("revealing round %s failed", round_.round_id)
            self._fail(round_, RoundFailed(f"revealing the aggregate failed: {type(exc).__name__}"))
            return
        revealed = time.perf_counter()
        round_.reveal_seconds = revealed - started
        self.store.finish_round(round_.round_id, result_chunks=float64_chunks(average), total_weight=weight,
                                contributors=len(receipts))
        with round_.done:
            round_.average = average
            round_.accumulator = None
            round_.record.total_weight, round_.record.contributors = weight, len(receipts)
            round_.record.state = COMPLETE
            round_.done.notify_all()
        log.info("round %s complete: %d contributors, total weight %g; revealed in %.3f s, stored in %.3f s",
                 round_.round_id, len(receipts), weight, revealed - started, time.perf_counter() - revealed)
        self.store.purge_submissions(round_.round_id)

    def _fail(self, round_: Round, error: SecureFLError) -> None:
        log.warning("round %s failed: %s", round_.round_id, error)
        self.store.finish_round(round_.round_id, contributors=len(round_.receipts),
                                error=(type(error).__name__, str(error)))
        with round_.done:
            round_.accumulator = None
            round_.record.error_type, round_.record.error_message = type(error).__name__, str(error)
            round_.record.contributors = len(round_.receipts)
            round_.record.state = FAILED
            round_.done.notify_all()
        self.store.purge_submissions(round_.round_id)

    def _watch_deadlines(self) -> None:
        while not self._stopped.wait(0.05):
            now = self.clock()
            with self._lock:
                open_rounds = [r for r in self._rounds.values() if r.state == OPEN]
            due = [r for r in open_rounds if (deadline := self._deadline(r)) is not None and now >= deadline]
            for round_ in due:
                with round_.lock:
                    quorum = len(round_.receipts) >= round_.config.min_clients
                if quorum:
                    self._begin_close(round_)
                else:
                    self._fail(round_, QuorumTimeout(
                        f"round {round_.round_id} reached its deadline with {len(round_.receipts)} of "
                        f"{round_.config.min_clients} required contributions; nothing was decrypted"
                    ))

    def wait(self, round_: Round, timeout: float) -> bool:
        """Block until the round ends or `timeout` passes; True when it ended."""
        with round_.done:
            return round_.done.wait_for(lambda: round_.state in (COMPLETE, FAILED), timeout)

    def result(self, round_: Round) -> np.ndarray:
        if round_.state == FAILED:
            raise round_.error()
        if round_.average is None:  # completed before a restart
            chunks = self.store.result_chunks(round_.round_id)
            round_.average = np.frombuffer(b"".join(chunks), dtype="<f8")
        return round_.average

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild rounds from the store: replay acknowledged submissions of unfinished rounds."""
        for record in self.store.rounds():
            round_ = Round(record, self.scheme)
            self._rounds[record.round_id] = round_
            self._seq = max(self._seq, record.seq)
            if record.state in (COMPLETE, FAILED):
                self.store.purge_submissions(record.round_id)  # in case a crash came before the purge
                continue
            for client_id, receipt_bytes in self.store.submissions(record.round_id):
                receipt = common_pb2.Receipt.FromString(receipt_bytes)
                chunks = [
                    self._parse_stored_chunk(round_, index, data)
                    for index, data in enumerate(self.store.submission_chunks(record.round_id, client_id))
                ]
                self._add(round_, receipt, chunks)
            log.info("recovered round %s with %d submissions", record.round_id, len(round_.receipts))
            if record.state == CLOSING:  # crashed while revealing: try again
                record.state = OPEN
                self._begin_close(round_)
            elif self._is_full(round_):
                self._begin_close(round_)

    def _parse_stored_chunk(self, round_: Round, index: int, data: bytes):
        values = chunk_length(index, round_.record.vector_length, self.scheme.chunk_values)
        return self.scheme.parse_chunk(index, data, values)

    def stop(self) -> None:
        self._stopped.set()
        self._watcher.join(timeout=2)
