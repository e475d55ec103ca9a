"""Embedded stores: SQLite for small durable records, plain files for sums.

RoundStore keeps what the aggregator must not lose, in O(model) disk per round whatever the
number of clients (docs/decisions.md, "Durability"):

* rounds: config, state, the shape fixed when the round opened, the outcome;
* a log per round: an append-only file of everything that changed the round, in order — each
  counted submission's receipt (the ack means "counted"), each accepted stage answer, each
  deadline that moved a scheme's stage, the close — each record one `write` (length, CRC-32,
  payload) under the round's lock, so it is in the page cache (a killed process cannot lose
  it) before the change is visible, and fsynced before it is acknowledged, by one `fdatasync`
  for all the records written meanwhile (group commit). A file, not SQLite rows: a small
  commit rewrote whole pages (15 kB written per 4 kB stage answer), appends cost their own
  bytes. A torn last record (a power cut mid-write) fails its CRC and ends the log: it was
  never acknowledged;
* checkpoints of the running sum with the exact set of contributors it holds: written at
  close (before anything is revealed) and every `checkpoint_seconds` while a round is open,
  as a file (sequential write, fsync, atomic rename) whose name and SHA-256 are committed
  in SQLite only once the file is complete;
* results, as one file per round in the dtype clients receive.

A submission is never written: a client keeps its protected update until it has the round's
result and resends it if the aggregator restarted before the update reached a checkpoint.

The database holds results: its file is created 0600 before SQLite opens it, and every commit
is `synchronous=FULL`. (The key-holder's record of decrypted rounds lives with its keys, in its
keystore: `securefl/he/keystore.py`.)"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, RoundFailed
from ..keyfiles import create_private_file
from .pause import pause_point


class _Database:
    def __init__(self, path: Path | str, schema: str, version: int = 0) -> None:
        """`version`: the schema's; a file written with another is refused, not misread."""
        if str(path) != ":memory:":
            create_private_file(Path(path))  # SQLite gives its -wal and -shm files the same mode
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        (found,) = self._conn.execute("PRAGMA user_version").fetchone()
        (tables,) = self._conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
        if tables and found != version:
            self._conn.close()
            raise InvalidInput(f"the store {path} has schema version {found}, this securefl writes {version}: "
                               "finish its rounds with the version that wrote it, or move it away")
        self._conn.executescript(schema)
        self._conn.execute(f"PRAGMA user_version = {int(version)}")
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


_ROUND_SCHEMA_VERSION = 2  # 2: logs, checkpoint files and results as files (issue 11)
_ROUND_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL,
    min_clients INTEGER NOT NULL, expected_clients INTEGER NOT NULL, timeout_seconds REAL NOT NULL,
    opened_at REAL NOT NULL, vector_length INTEGER, spec_hash BLOB,
    error_type TEXT, error_message TEXT, total_weight REAL, contributors INTEGER, result_dtype TEXT,
    signatures TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    round_id TEXT PRIMARY KEY, file TEXT NOT NULL, sha256 BLOB NOT NULL, contributors TEXT NOT NULL);
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
    result_dtype: str | None = None
    signatures: dict[str, bytes] | None = None  # of a completed round: each contributor's receipt signature


SUBMITTED, ANSWERED, TICKED, CLOSED, JOINED = "submitted", "answered", "ticked", "closed", "joined"


@dataclass(frozen=True)
class Event:
    """One entry of a round's log. `at` is the engine's clock when it happened, so a replay
    shows the scheme the same clock readings."""

    kind: str  # SUBMITTED (body: the receipt), ANSWERED (stage, body), TICKED, CLOSED, JOINED
    at: float
    client_id: str = ""
    stage: str = ""
    body: bytes = b""


@dataclass(frozen=True)
class Checkpoint:
    contributors: list[str]
    chunks: list[bytes]


def _frame(data: bytes) -> bytes:
    return struct.pack(">Q", len(data))


def _unframe(data: bytes) -> list[bytes]:
    chunks, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">Q", data, offset)
        chunks.append(data[offset + 8:offset + 8 + size])
        offset += 8 + size
    return chunks


class _Log:
    """An append-only file with group commit: `append` writes (one `write` per record), `sync`
    makes everything appended so far durable with one `fdatasync` shared by concurrent callers.

    A log is closed when its round's outcome is recorded and the log deleted, which can happen
    between an answer's append and its sync (the engine syncs outside the round's lock, and
    that answer may be the one that completes the round). Closing waits for a sync under way,
    and a sync after it has nothing left to make durable: it never touches the descriptor
    number again, which by then may be another file's."""

    def __init__(self, path: Path) -> None:
        self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._appended = self._synced = 0
        self._closed = False
        self._write = threading.Lock()
        self._sync = threading.Lock()

    def append(self, data: bytes) -> None:
        with self._write:
            if self._closed:
                raise RuntimeError("a record was appended to the log of a round already recorded and deleted")
            os.write(self._descriptor, data)
            self._appended += 1

    def sync(self) -> None:
        wanted = self._appended
        with self._sync:
            if self._synced >= wanted or self._closed:
                return  # another caller's fdatasync covered this record, or the round is recorded and its log gone
            reached = self._appended
            os.fdatasync(self._descriptor)
            self._synced = reached

    def close(self) -> None:
        with self._write, self._sync:
            self._closed = True
            os.close(self._descriptor)


class _Files:
    """Files written once and whole (sequential write, fsync, atomic rename, directory fsync: a
    file is complete under its name or absent), and append-only logs. All are created 0600 in
    a 0700 directory: results are plaintext averages."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(mode=0o700, exist_ok=True)
        for partial in directory.glob("*.partial"):
            partial.unlink()
        self._logs: dict[str, _Log] = {}
        self._logs_lock = threading.Lock()

    def write(self, name: str, chunks: Iterable[bytes]) -> bytes:
        """Write the chunks, framed; returns the SHA-256 of the file."""
        path, partial = self._directory / name, self._directory / f"{name}.partial"
        digest = hashlib.sha256()
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "wb") as out:
            for data in chunks:
                for piece in (_frame(data), data):
                    out.write(piece)
                    digest.update(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return digest.digest()

    def read(self, name: str) -> tuple[list[bytes], bytes]:
        """The chunks of a file and its SHA-256."""
        data = (self._directory / name).read_bytes()
        return _unframe(data), hashlib.sha256(data).digest()

    def _log(self, name: str) -> _Log:
        with self._logs_lock:
            if name not in self._logs:
                self._logs[name] = _Log(self._directory / name)
            return self._logs[name]

    def append(self, name: str, data: bytes) -> None:
        """One `write` at the end of a log: in the page cache (so it survives the process) when
        this returns."""
        self._log(name).append(data)

    def sync(self, name: str) -> None:
        """Everything this process appended to the log is on disk when this returns; a deleted
        log, whose round is recorded, is not brought back."""
        with self._logs_lock:
            log = self._logs.get(name)
        if log is not None:
            log.sync()

    def read_log(self, name: str) -> bytes:
        """The log as it is on disk: made durable first, so that what a crashed process
        appended but never synced is not acknowledged again (a resent answer or submission)
        while it is still only in the page cache."""
        try:
            with open(self._directory / name, "rb") as log:
                os.fdatasync(log.fileno())
                return log.read()
        except FileNotFoundError:
            return b""

    def delete(self, name: str) -> None:
        with self._logs_lock:  # gone from the directory and the open logs at once (see `sync`)
            log = self._logs.pop(name, None)
            (self._directory / name).unlink(missing_ok=True)
        if log is not None:
            log.close()

    def names(self) -> set[str]:
        return {path.name for path in self._directory.iterdir()}


class _MemoryFiles(_Files):
    """The same in memory, for in-process engines (`RoundStore()`)."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    def write(self, name: str, chunks: Iterable[bytes]) -> bytes:
        self._files[name] = b"".join(_frame(data) + data for data in chunks)
        return hashlib.sha256(self._files[name]).digest()

    def read(self, name: str) -> tuple[list[bytes], bytes]:
        return _unframe(self._files[name]), hashlib.sha256(self._files[name]).digest()

    def append(self, name: str, data: bytes) -> None:
        self._files[name] = self._files.get(name, b"") + data

    def sync(self, name: str) -> None:
        return None

    def read_log(self, name: str) -> bytes:
        return self._files.get(name, b"")

    def delete(self, name: str) -> None:
        self._files.pop(name, None)

    def names(self) -> set[str]:
        return set(self._files)


class RoundStore:
    def __init__(self, path: Path | str = ":memory:") -> None:
        self._db = _Database(path, _ROUND_SCHEMA, _ROUND_SCHEMA_VERSION)
        in_memory = str(path) == ":memory:"
        self._files = _MemoryFiles() if in_memory else _Files(Path(f"{path}-sums"))
        self._generation = itertools.count(int(time.time() * 1000))
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Files of a crash between writing one and recording it, or between superseding one
        and deleting it."""
        referenced = {row[0] for row in self._db.execute("SELECT file FROM checkpoints")}
        for seq, state in self._db.execute("SELECT seq, state FROM rounds"):
            referenced.add(_result_file(seq) if state == "complete" else _log_file(seq))
        for name in self._files.names() - referenced:
            self._files.delete(name)

    # -- rounds ------------------------------------------------------------------------------

    def rounds(self) -> list[RoundRecord]:
        rows = self._db.execute("SELECT * FROM rounds ORDER BY seq")
        return [_record(row) for row in rows]

    def round(self, round_id: str) -> RoundRecord | None:
        rows = self._db.execute("SELECT * FROM rounds WHERE round_id = ?", (round_id,))
        return _record(rows[0]) if rows else None

    def create_round(self, record: RoundRecord) -> None:
        self._db.execute(
            "INSERT INTO rounds (round_id, seq, state, min_clients, expected_clients, timeout_seconds, opened_at,"
            " vector_length, spec_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.round_id, record.seq, record.state, record.min_clients, record.expected_clients,
             record.timeout_seconds, record.opened_at, record.vector_length, record.spec_hash),
        )

    # -- the log -----------------------------------------------------------------------------

    def append_event(self, record: RoundRecord, event: Event) -> None:
        """Append `event` to the round's log (it survives the process; `sync_log` makes it
        survive the machine)."""
        self._files.append(_log_file(record.seq), _encode_event(event))

    def sync_log(self, record: RoundRecord) -> None:
        """Everything appended to the round's log so far is on disk: call it before
        acknowledging, outside the round's lock (concurrent callers share one fdatasync)."""
        self._files.sync(_log_file(record.seq))

    def events(self, record: RoundRecord) -> list[Event]:
        """The round's log, up to its first incomplete or damaged record."""
        return _decode_events(self._files.read_log(_log_file(record.seq)))

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, record: RoundRecord, contributors: list[str], chunks: Iterable[bytes],
                        closed: Event | None = None) -> None:
        """Write the running sum holding exactly `contributors`, then record it; with `closed`
        (logged first), the same transaction moves the round to closing — a logged close whose
        checkpoint was never recorded is ignored on replay. The previous checkpoint's file is
        deleted only after the new one is recorded."""
        name = f"{record.seq}-{next(self._generation)}.sum"
        digest = self._files.write(name, chunks)
        pause_point("checkpoint.written")
        if closed is not None:
            self.append_event(record, closed)
            self.sync_log(record)
        previous = self._db.execute("SELECT file FROM checkpoints WHERE round_id = ?", (record.round_id,))
        statements: list[tuple[str, Iterable]] = [(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
            (record.round_id, name, digest, json.dumps(contributors)),
        )]
        if closed is not None:
            statements.append(("UPDATE rounds SET state = ? WHERE round_id = ?", (record.state, record.round_id)))
        self._db.transaction(statements)
        for (old,) in previous:
            self._files.delete(old)

    def checkpoint(self, round_id: str) -> Checkpoint | None:
        """The round's latest checkpoint; RoundFailed if its file is not the one recorded."""
        rows = self._db.execute("SELECT file, sha256, contributors FROM checkpoints WHERE round_id = ?", (round_id,))
        if not rows:
            return None
        name, expected, contributors = rows[0]
        try:
            chunks, digest = self._files.read(name)
        except OSError:
            chunks, digest = [], b""
        if not hmac.compare_digest(digest, expected):
            raise RoundFailed(f"the checkpoint of round {round_id} is missing or corrupt; its sum cannot be trusted")
        return Checkpoint(json.loads(contributors), chunks)

    # -- outcomes ------------------------------------------------------------------------------

    def finish_round(self, record: RoundRecord, *, result: np.ndarray | None = None) -> None:
        """Store the round's outcome (the record's state, error, weight and contributors), and
        its result, written as a file before the state that points to it."""
        if result is not None:
            self._files.write(_result_file(record.seq), [result.tobytes()])
        self._db.execute(
            "UPDATE rounds SET state = ?, error_type = ?, error_message = ?, total_weight = ?, contributors = ?,"
            " result_dtype = ?, signatures = ? WHERE round_id = ?",
            (record.state, record.error_type, record.error_message, record.total_weight, record.contributors,
             record.result_dtype,
             json.dumps({cid: sig.hex() for cid, sig in record.signatures.items()}) if record.signatures else None,
             record.round_id),
        )

    def result(self, record: RoundRecord) -> np.ndarray:
        chunks, _ = self._files.read(_result_file(record.seq))
        return np.frombuffer(b"".join(chunks), dtype=record.result_dtype)

    def purge(self, record: RoundRecord) -> None:
        """Forget what only an unfinished round needs: its log and its checkpoint."""
        files = self._db.execute("SELECT file FROM checkpoints WHERE round_id = ?", (record.round_id,))
        self._db.execute("DELETE FROM checkpoints WHERE round_id = ?", (record.round_id,))
        for (name,) in files:
            self._files.delete(name)
        self._files.delete(_log_file(record.seq))

    def close(self) -> None:
        self._db.close()


def _record(row: tuple) -> RoundRecord:
    *fields, signatures = row
    return RoundRecord(*fields, signatures={cid: bytes.fromhex(sig) for cid, sig in json.loads(signatures).items()}
                       if signatures else None)


def _log_file(seq: int) -> str:
    return f"{seq}.log"


_EVENT_HEADER = struct.Struct(">IId")  # payload length, CRC-32 of the payload, clock reading


def _encode_event(event: Event) -> bytes:
    payload = b"".join(struct.pack(">H", len(text)) + text for text in
                       (event.kind.encode(), event.client_id.encode(), event.stage.encode())) + event.body
    return _EVENT_HEADER.pack(len(payload), zlib.crc32(payload), event.at) + payload


def _decode_events(data: bytes) -> list[Event]:
    events, offset = [], 0
    while offset + _EVENT_HEADER.size <= len(data):
        size, crc, at = _EVENT_HEADER.unpack_from(data, offset)
        payload = data[offset + _EVENT_HEADER.size:offset + _EVENT_HEADER.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            break  # a torn last record: never acknowledged
        texts, cursor = [], 0
        for _ in range(3):
            (length,) = struct.unpack_from(">H", payload, cursor)
            texts.append(payload[cursor + 2:cursor + 2 + length].decode())
            cursor += 2 + length
        events.append(Event(texts[0], at, texts[1], texts[2], payload[cursor:]))
        offset += _EVENT_HEADER.size + size
    return events


def _result_file(seq: int) -> str:
    return f"{seq}.result"
