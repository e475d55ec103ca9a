"""Parallel HE encryption (CKKS or BFV) in a process pool.

TenSEAL holds the GIL, so threads cannot encrypt in parallel; processes can. Workers load
only the public context. One pool per public context is shared by every client in a
process, so a simulation with many client threads still uses one worker per core."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ..rounds.chunks import chunk_count
from .codec import encrypt_chunks
from .keys import fingerprint

# Below this many ciphertexts, shipping the work to another process costs more than it saves.
INLINE_MAX_CHUNKS = 8

_worker_context = None


def _init_worker(public_context: bytes) -> None:
    global _worker_context
    from .keys import load_public_context

    _worker_context = load_public_context(public_context)


# A module-level function (it travels to workers by name): (context, values, slots) -> chunks.
ChunkEncryptor = Callable[[object, np.ndarray, int], list[bytes]]


def _encrypt_in_worker(encrypt: ChunkEncryptor, values: np.ndarray, slots: int) -> list[bytes]:
    return encrypt(_worker_context, values, slots)


class EncryptionPool:
    """Encrypts a vector's chunks across `workers` processes, preserving chunk order."""

    def __init__(self, public_context: bytes, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(public_context,),
        )

    def encrypt(self, vector: np.ndarray, slots: int, encrypt: ChunkEncryptor = encrypt_chunks) -> list[bytes]:
        """Chunks of `slots` values each, encrypted by `encrypt` (CKKS by default)."""
        n_chunks = chunk_count(vector.size, slots)
        tasks = min(n_chunks, self.workers * 4)
        bounds = np.linspace(0, n_chunks, tasks + 1).astype(int) * slots
        futures = [
            self._executor.submit(_encrypt_in_worker, encrypt, vector[start:stop], slots)
            for start, stop in zip(bounds[:-1], bounds[1:])
            if stop > start
        ]
        return [chunk for future in futures for chunk in future.result()]

    def shutdown(self) -> None:
        self._executor.shutdown(cancel_futures=True)


def encrypt_vector(context, vector: np.ndarray, slots: int, encrypt: ChunkEncryptor = encrypt_chunks,
                   pool: EncryptionPool | None = None) -> list[bytes]:
    """Encrypt on `pool` when there is one and the vector is large enough to gain from it."""
    if pool is None or chunk_count(vector.size, slots) <= INLINE_MAX_CHUNKS:
        return encrypt(context, vector, slots)
    return pool.encrypt(vector, slots, encrypt)


_pools: dict[bytes, EncryptionPool] = {}
_pools_lock = threading.Lock()


def shared_pool(public_context: bytes) -> EncryptionPool:
    """The process-wide pool for this public context, started on first use."""
    key = fingerprint(public_context)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = EncryptionPool(public_context)
        return _pools[key]


@atexit.register
def _shutdown_pools() -> None:
    for pool in _pools.values():
        pool.shutdown()
    _pools.clear()

