"""Embedded SQLite stores.

RoundStore keeps what the aggregator must not lose: round configs and states, every
acknowledged submission (its receipt and protected chunks, written in one transaction before
the acknowledgement), and published results. After a restart, open rounds are rebuilt by
replaying their submissions, so the aggregator's memory stays O(model) while an acknowledged
submission survives a crash. Submissions are deleted once their round ends.

KeyHolderStore keeps the set of decrypted rounds (one decryption per round, across restarts)
and the audit log.

Both databases hold results or decisions: their files are created 0600 before SQLite opens
them, and every commit is `synchronous=FULL`, because an acknowledgement (a submission, a
decryption claimed) promises that it survives a power loss, not only a crash."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..keyfiles import create_private_file


class _Database:
    def __init__(self, path: Path | str, schema: str) -> None:
        if str(path) != ":memory:":
            create_private_file(Path(path))  # SQLite gives its -wal and -shm files the same mode
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(schema)
        self._lock = threading.Lock()

    def execute(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def transaction(self, statements: Iterable[tuple[str, Iterable]]) -> None:
        """Run statements atomically: all are durable or none is."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._conn.execute(sql, tuple(params))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_ROUND_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL,
    min_clients INTEGER NOT NULL, expected_clients INTEGER NOT NULL, timeout_seconds REAL NOT NULL,
    opened_at REAL NOT NULL, vector_length INTEGER, spec_hash BLOB,
    error_type TEXT, error_message TEXT, total_weight REAL, contributors INTEGER);
CREATE TABLE IF NOT EXISTS submissions (
    round_id TEXT NOT NULL, client_id TEXT NOT NULL, receipt BLOB NOT NULL,
    PRIMARY KEY (round_id, client_id));
CREATE TABLE IF NOT EXISTS submission_chunks (
    round_id TEXT NOT NULL, client_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (round_id, client_id, idx));
CREATE TABLE IF NOT EXISTS results (
    round_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (round_id, idx));
"""


@dataclass
class RoundRecord:
    round_id: str
    seq: int
    state: str
    min_clients: int
    expected_clients: int
    timeout_seconds: float
    opened_at: float
    vector_length: int | None = None
    spec_hash: bytes | None = None
    error_type: str | None = None
    error_message: str | None = None
    total_weight: float | None = None
    contributors: int | None = None


class RoundStore:
    def __init__(self, path: Path | str = ":memory:") -> None:
        self._db = _Database(path, _ROUND_SCHEMA)

    def rounds(self) -> list[RoundRecord]:
        rows = self._db.execute("SELECT * FROM rounds ORDER BY seq")
        return [RoundRecord(*row) for row in rows]

    def round(self, round_id: str) -> RoundRecord | None:
        rows = self._db.execute("SELECT * FROM rounds WHERE round_id = ?", (round_id,))
        return RoundRecord(*rows[0]) if rows else None

    def create_round(self, record: RoundRecord) -> None:
        self._db.execute(
            "INSERT INTO rounds (round_id, seq, state, min_clients, expected_clients, timeout_seconds, opened_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.round_id, record.seq, record.state, record.min_clients, record.expected_clients,
             record.timeout_seconds, record.opened_at),
        )

    def add_submission(
        self, round_id: str, client_id: str, receipt: bytes, chunks: list[bytes],
        vector_length: int, spec_hash: bytes,
    ) -> None:
        """Durably record an accepted submission (and, for the first, the round's shape)."""
        statements: list[tuple[str, Iterable]] = [
            ("UPDATE rounds SET vector_length = ?, spec_hash = ? WHERE round_id = ?",
             (vector_length, spec_hash, round_id)),
            ("INSERT INTO submissions VALUES (?, ?, ?)", (round_id, client_id, receipt)),
        ]
        statements += [
            ("INSERT INTO submission_chunks VALUES (?, ?, ?, ?)", (round_id, client_id, i, data))
            for i, data in enumerate(chunks)
        ]
        self._db.transaction(statements)

    def submissions(self, round_id: str) -> list[tuple[str, bytes]]:
        return self._db.execute(
            "SELECT client_id, receipt FROM submissions WHERE round_id = ? ORDER BY rowid", (round_id,)
        )

    def submission_chunks(self, round_id: str, client_id: str) -> Iterator[bytes]:
        rows = self._db.execute(
            "SELECT data FROM submission_chunks WHERE round_id = ? AND client_id = ? ORDER BY idx",
            (round_id, client_id),
        )
        return (row[0] for row in rows)

    def set_state(self, round_id: str, state: str) -> None:
        self._db.execute("UPDATE rounds SET state = ? WHERE round_id = ?", (state, round_id))

    def finish_round(
        self, round_id: str, *, result_chunks: list[bytes] | None = None, total_weight: float | None = None,
        contributors: int, error: tuple[str, str] | None = None,
    ) -> None:
        """Store the outcome. The submissions stay until `purge_submissions`, which callers run
        after waking the waiting clients: deleting a round's chunks takes seconds for large
        models and must not delay the result."""
        state = "failed" if error else "complete"
        error_type, error_message = error or (None, None)
        statements: list[tuple[str, Iterable]] = [
            ("UPDATE rounds SET state = ?, error_type = ?, error_message = ?, total_weight = ?, contributors = ?"
             " WHERE round_id = ?", (state, error_type, error_message, total_weight, contributors, round_id)),
        ]
        statements += [
            ("INSERT INTO results VALUES (?, ?, ?)", (round_id, i, data))
            for i, data in enumerate(result_chunks or [])
        ]
        self._db.transaction(statements)

    def purge_submissions(self, round_id: str) -> None:
        self._db.execute("DELETE FROM submission_chunks WHERE round_id = ?", (round_id,))

    def result_chunks(self, round_id: str) -> list[bytes]:
        rows = self._db.execute("SELECT data FROM results WHERE round_id = ? ORDER BY idx", (round_id,))
        return [row[0] for row in rows]

    def close(self) -> None:
        self._db.close()


class VolatileRoundStore(RoundStore):
    """A round store for a driver whose rounds cannot outlive its process (the Flower strategy:
    a ServerApp that stops ends its run). It keeps round records but no submission chunks nor
    results, so a round costs O(model) memory (the running sum), whatever the number of
    clients; there is nothing to replay after a restart."""

    def __init__(self) -> None:
        super().__init__(":memory:")

    def add_submission(self, round_id: str, client_id: str, receipt: bytes, chunks: list[bytes],
                       vector_length: int, spec_hash: bytes) -> None:
        super().add_submission(round_id, client_id, receipt, [], vector_length, spec_hash)

    def finish_round(self, round_id: str, *, result_chunks: list[bytes] | None = None,
                     total_weight: float | None = None, contributors: int,
                     error: tuple[str, str] | None = None) -> None:
        super().finish_round(round_id, total_weight=total_weight, contributors=contributors, error=error)


_KEYHOLDER_SCHEMA = """
CREATE TABLE IF NOT EXISTS decryptions (round_id TEXT PRIMARY KEY, decided_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, round_id TEXT, decision TEXT NOT NULL,
    detail TEXT NOT NULL, caller TEXT NOT NULL DEFAULT '');
"""


class KeyHolderStore:
    def __init__(self, path: Path | str = ":memory:") -> None:
        self._db = _Database(path, _KEYHOLDER_SCHEMA)

    def claim_decryption(self, round_id: str) -> bool:
        """Atomically mark the round decrypted; False when it already was."""
        try:
            self._db.execute("INSERT INTO decryptions VALUES (?, ?)", (round_id, time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    def audit(self, round_id: str | None, decision: str, detail: str, caller: str = "") -> None:
        self._db.execute(
            "INSERT INTO audit (at, round_id, decision, detail, caller) VALUES (?, ?, ?, ?, ?)",
            (time.time(), round_id, decision, detail, caller),
        )

    def audit_log(self) -> list[tuple[float, str | None, str, str, str]]:
        """(time, round, decision, detail, who asked) in order."""
        return self._db.execute("SELECT at, round_id, decision, detail, caller FROM audit ORDER BY id")

    def close(self) -> None:
        self._db.close()
