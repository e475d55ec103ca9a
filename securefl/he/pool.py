"""Parallel HE work (CKKS or BFV) in worker processes that leak nothing of multiprocessing to
the program using securefl: clients encrypt on an `EncryptionPool`, the key-holder decrypts
aggregates on a `DecryptionPool`.

TenSEAL holds the GIL, so threads cannot encrypt or decrypt in parallel; processes can. The
workers are plain subprocesses running `python -m securefl.he.worker` and talking length-prefixed
frames over pipes, not multiprocessing children: spawn and forkserver children re-import the
caller's `__main__` (a script without an `if __name__ == "__main__":` guard runs again in every
worker, `python -` and `python -c` fail outright; measured in docs/decisions.md), and fork is
unsafe once gRPC threads run. So `aggregate` works unchanged from a script without a main guard,
`python -`, `python -c`, a notebook or a thread.

What crosses the pipes. Encryption workers: public contexts (a secret key is refused by the
worker) and the masked plaintext values of this process's own update; ciphertexts come back. One
pool serves every client and every key epoch of a process (workers keep a few contexts by
fingerprint). Decryption workers are the key-holder's own children, started in the worker's
decryption mode: each request carries the secret context and the aggregate's ciphertexts (already
validated by the release core), the decrypted slots come back, and the worker drops the context
when it answers. The secret key thus stays within the key-holder's processes (same user, an
anonymous pipe, never a file), and a worker holds it only while it decrypts one release, so a
retired or purged key epoch lives on in no worker.

Failure: if workers cannot start at all (no usable `sys.executable`, as in some embedded
interpreters), the work falls back to this process with a one-line warning. An encryption worker
that dies while encrypting raises `WorkerDied`, which says what happened and what to do; the next
call starts a new worker. A decryption worker that dies is replaced the same way, and the
release it served decrypts in the key-holder's process instead. `SECUREFL_ENCRYPTION_WORKERS=0`
encrypts in this process, always; the key-holder's `decryption_workers` setting 0 decrypts in
its process."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from ..errors import InvalidInput, SecureFLError, WorkerDied
from ..rounds.chunks import chunk_count
from .codec import CHUNK_ENCRYPTORS, HEVector, decrypt_chunks
from .keys import SecretContext, fingerprint
from .frames import (
    DECRYPT, DECRYPTED_DTYPES, ENCRYPT, FAILED, LOAD, SCHEME_CODES, VALUE_DTYPES, decode_chunks, encode_chunks, read_frame,
    write_frame,
)

log = logging.getLogger(__name__)

WORKERS_ENV = "SECUREFL_ENCRYPTION_WORKERS"
# Below this many ciphertexts, shipping the work to another process costs more than it saves.
INLINE_MAX_CHUNKS = 8
_START_FAILED = "securefl: cannot start HE {role} worker processes ({reason}); {role_ing} in this process"


def configured_workers() -> int:
    """Workers per process: $SECUREFL_ENCRYPTION_WORKERS (0: none), else one per core."""
    value = os.environ.get(WORKERS_ENV)
    if value is None:
        return os.cpu_count() or 1
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise InvalidInput(f"${WORKERS_ENV} must be a number of worker processes (0: encrypt in this process), "
                           f"got {value!r:.20}")
    return workers


class WorkersUnavailable(Exception):
    """Worker processes cannot be started in this environment; the caller falls back."""


@dataclass(frozen=True)
class _Role:
    """What a pool's workers do: the worker's command-line mode and the words of its errors."""

    name: str  # "encryption"
    doing: str  # "encrypting"
    arguments: tuple[str, ...]
    advice: str  # what the caller of a call whose worker died should do


_ENCRYPTION = _Role("encryption", "encrypting", (), (
    "nothing was sent for this round. Call aggregate again (new workers start). If the system killed it "
    f"(out of memory?), free memory or set {WORKERS_ENV} to fewer workers; {WORKERS_ENV}=0 encrypts in this "
    "process."))
_DECRYPTION = _Role("decryption", "decrypting", ("--decrypt",), (
    "nothing was released by it; the key-holder decrypts this release in its own process, and the next one "
    "starts a new worker."))


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    role: _Role
    contexts: set[bytes] = field(default_factory=set)  # fingerprints of the public contexts it has loaded
    served: bool = False  # answered at least once: it started correctly

    @classmethod
    def start(cls, role: _Role) -> _Worker:
        if not sys.executable:
            raise WorkersUnavailable("sys.executable is unknown")
        # The worker imports securefl from where this process found it (a checkout on sys.path too).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        try:
            process = subprocess.Popen([sys.executable, "-m", "securefl.he.worker", *role.arguments],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, env=env)
        except OSError as exc:
            raise WorkersUnavailable(f"{sys.executable}: {exc.strerror}") from None
        return cls(process, role)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, *parts: bytes) -> None:
        try:
            write_frame(self.process.stdin, *parts)
        except (BrokenPipeError, ValueError, OSError):
            raise self.died() from None

    def receive(self) -> list[bytes]:
        try:
            reply = read_frame(self.process.stdout)
        except (EOFError, ValueError, OSError):
            reply = None
        if reply is None:
            raise self.died()
        if reply[:1] == FAILED:
            raise SecureFLError(f"HE {self.role.name} worker {self.process.pid} refused the work: "
                                f"{reply[1:].decode(errors='replace')}")
        self.served = True
        return decode_chunks(reply[1:])

    def died(self) -> Exception:
        """The error for a worker whose pipe broke: WorkersUnavailable if it never worked."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if not self.served:
            return WorkersUnavailable(f"a worker {how} before its first answer")
        return WorkerDied(f"HE {self.role.name} worker process {self.process.pid} {how} while {self.role.doing}; "
                          f"{self.role.advice}")

    def stop(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


Request = Callable[[_Worker, int, int], None]


class _WorkerPool:
    """Splits a call's chunks [0, n) into contiguous ranges across up to `workers` processes
    and gathers the replies in chunk order. Thread-safe: concurrent calls share the workers
    (each worker serves one call at a time)."""

    role: _Role

    def __init__(self, workers: int | None = None) -> None:
        self.workers = configured_workers() if workers is None else workers
        if self.workers < 1:
            raise InvalidInput(f"an HE {self.role.name} pool needs at least one worker")
        self._members: list[_Worker] = []  # started and not stopped
        self._idle: list[_Worker] = []
        self._available = threading.Condition()
        self._closed = False
        self.unavailable: str | None = None  # why workers cannot start here; then callers work inline

    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        with self._available:
            return [w.process.pid for w in self._members if w.alive]

    def _run(self, n_chunks: int, request: Request) -> list[bytes]:
        """`request(worker, start, stop)` sends one worker its range; the replies, in order.
        Raises WorkerDied if a worker dies meanwhile, WorkersUnavailable if none can start (and
        from then on: `unavailable` says why)."""
        if self.unavailable is not None:
            raise WorkersUnavailable(self.unavailable)
        workers = self._acquire(n_chunks)
        finished = False
        try:
            bounds = np.linspace(0, n_chunks, len(workers) + 1).astype(int)
            for worker, start, stop in zip(workers, bounds[:-1], bounds[1:]):
                request(worker, int(start), int(stop))
            replies = [reply for worker in workers for reply in worker.receive()]
            finished = True
            return replies
        except WorkersUnavailable as exc:
            self._give_up(str(exc))
            raise
        finally:
            self._release(workers, reusable=finished)

    def _acquire(self, n_chunks: int) -> list[_Worker]:
        """Up to `n_chunks` idle workers (starting new ones up to the pool's size); at least one."""
        with self._available:
            while True:
                if self._closed:
                    raise InvalidInput(f"the HE {self.role.name} pool is shut down")
                for worker in [w for w in self._idle if not w.alive]:
                    log.info("HE %s worker %d ended while idle (code %s)", self.role.name, worker.process.pid,
                             worker.process.returncode)
                    self._stop(worker)
                while len(self._members) < self.workers and len(self._idle) < n_chunks:
                    try:
                        worker = _Worker.start(self.role)
                    except WorkersUnavailable as exc:
                        self._give_up(str(exc))
                        raise
                    self._members.append(worker)
                    self._idle.append(worker)
                if self._idle:
                    taken, self._idle = self._idle[:n_chunks], self._idle[n_chunks:]
                    return taken
                self._available.wait()

    def _give_up(self, reason: str) -> None:
        """Workers cannot run here: say so once, in one line; callers work in their process."""
        if self.unavailable is None:
            self.unavailable = reason
            warnings.warn(_START_FAILED.format(role=self.role.name, role_ing=self.role.doing, reason=reason),
                          RuntimeWarning, stacklevel=5)

    def _release(self, workers: list[_Worker], reusable: bool) -> None:
        """Return workers after a call. After a failed call they may hold unread replies: stop
        them (replacements start on demand)."""
        with self._available:
            for worker in workers:
                if reusable and worker.alive and not self._closed:
                    self._idle.append(worker)
                else:
                    self._stop(worker)
            self._available.notify_all()

    def _stop(self, worker: _Worker) -> None:
        """The caller holds the lock."""
        if worker in self._idle:
            self._idle.remove(worker)
        if worker in self._members:
            self._members.remove(worker)
        worker.stop()

    def shutdown(self) -> None:
        with self._available:
            self._closed = True
            for worker in list(self._members):
                self._stop(worker)
            self._available.notify_all()


class EncryptionPool(_WorkerPool):
    """Encrypts a vector's chunks across worker processes that never hold a secret key."""

    role = _ENCRYPTION

    def encrypt(self, public_context: bytes, values: np.ndarray, slots: int, scheme: str) -> list[bytes]:
        """`values` in consecutive ciphertexts of `slots` values under `public_context`. Raises
        WorkerDied if a worker dies meanwhile, WorkersUnavailable if none can start."""
        key = fingerprint(public_context)
        data = np.ascontiguousarray(values, dtype=VALUE_DTYPES[SCHEME_CODES[scheme]])

        def request(worker: _Worker, start: int, stop: int) -> None:
            if key not in worker.contexts:
                worker.send(LOAD, key, public_context)
                worker.receive()
                worker.contexts.add(key)
            worker.send(ENCRYPT, key, SCHEME_CODES[scheme], struct.pack(">I", slots),
                        data[start * slots:stop * slots].tobytes())

        return self._run(chunk_count(values.size, slots), request)


class DecryptionPool(_WorkerPool):
    """Decrypts an aggregate's ciphertexts across the key-holder's own worker processes; each
    request carries the secret context, which the worker drops once it answers."""

    role = _DECRYPTION

    def decrypt(self, secret: SecretContext, scheme: str, chunks: Sequence[bytes]) -> np.ndarray:
        """The slots of `chunks` (validated ciphertexts under `secret`) in order: float64 for
        CKKS, int64 for BFV, as `codec.decrypt_chunks` gives them."""
        code = SCHEME_CODES[scheme]
        context = secret.secret_bytes()

        def request(worker: _Worker, start: int, stop: int) -> None:
            worker.send(DECRYPT, code, encode_chunks([context, *chunks[start:stop]]))

        parts = self._run(len(chunks), request)
        return np.concatenate([np.frombuffer(part, dtype=DECRYPTED_DTYPES[code]) for part in parts])


def encrypt_inline(context: ts.Context, values: np.ndarray, slots: int, scheme: str) -> list[bytes]:
    return CHUNK_ENCRYPTORS[scheme](context, values, slots)


@dataclass
class Encryptor:
    """Encrypts under one public context: in this process for small vectors (or without a
    pool), on the pool for large ones; falls back to this process, with a one-line warning,
    when workers cannot start."""

    context: ts.Context
    public_context: bytes
    pool: EncryptionPool | None = None

    def encrypt(self, values: np.ndarray, slots: int, scheme: str) -> list[bytes]:
        if self.pool is None or chunk_count(values.size, slots) <= INLINE_MAX_CHUNKS:
            return encrypt_inline(self.context, values, slots, scheme)
        try:
            return self.pool.encrypt(self.public_context, values, slots, scheme)
        except WorkersUnavailable:
            return encrypt_inline(self.context, values, slots, scheme)


@dataclass
class Decryptor:
    """Decrypts a release's aggregate: in this process for a few ciphertexts (or without a
    pool), on the decryption pool for many; in this process whenever the pool cannot serve
    (no workers can start: a one-line warning; a worker died or refused: logged), so a
    release never fails for want of a worker. The output is the same either way."""

    pool: DecryptionPool | None = None

    def uses_workers(self, n_chunks: int) -> bool:
        """Whether an aggregate of `n_chunks` ciphertexts goes to the workers, which need them
        as received (the caller keeps them only then)."""
        return self.pool is not None and n_chunks > INLINE_MAX_CHUNKS

    def decrypt(self, secret: SecretContext, scheme: str, chunks: Sequence[bytes],
                parsed: list[HEVector]) -> np.ndarray:
        """`parsed` are the validated ciphertexts, linked to their context; `chunks` the same as
        received, needed only if `uses_workers`."""
        if not self.uses_workers(len(parsed)):
            return decrypt_chunks(secret.context, parsed)
        try:
            return self.pool.decrypt(secret, scheme, chunks)
        except SecureFLError as exc:
            log.warning("decrypting in the key-holder's process: %s", exc)
        except WorkersUnavailable:
            pass
        return decrypt_chunks(secret.context, parsed)


_shared: EncryptionPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> EncryptionPool | None:
    """The process-wide pool, created on first use (its workers start when a large vector comes);
    None when workers are off ($SECUREFL_ENCRYPTION_WORKERS=0)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            workers = configured_workers()
            if workers:
                _shared = EncryptionPool(workers)
        return _shared


@atexit.register
def _shutdown_shared_pool() -> None:
    if _shared is not None:
        _shared.shutdown()
