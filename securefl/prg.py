"""Pseudo-random masks and uniforms from AES-256-CTR keystreams (`cryptography`), straight into
numpy arrays: SecAgg+'s pairwise and self masks, the HE schemes' masks and noise, and the
randomness of stochastic rounding.

A seed is used for exactly one mask: pairwise seeds are derived per round and pair, self-mask
seeds are fresh per round, so the all-zero nonce never repeats under one key.

Masks are applied block by block (`apply_masks`): every keystream advances one block at a time
into a scratch buffer that stays in cache, so masking an update against k seeds reads and writes
the update once instead of allocating and adding k update-sized arrays. The keystream bytes are
the same as `expand`'s, so either side may use either."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
BLOCK_BYTES = 1 << 18  # a scratch block that stays in the L2 cache of the machines we measured
_SLACK = 16  # update_into wants a block of slack after the output


_zeros = bytes(BLOCK_BYTES)
_zeros_lock = threading.Lock()


def _zero_bytes(length: int) -> memoryview:
    """A shared read-only run of zero bytes to encrypt (allocating it per mask costs 4x the AES).
    It only ever grows, and is replaced whole: a block's worth needs no lock."""
    global _zeros
    zeros = _zeros
    if len(zeros) < length:
        with _zeros_lock:
            if len(_zeros) < length:
                _zeros = bytes(length)
            zeros = _zeros
    return memoryview(zeros)[:length]


class Keystream:
    """The AES-256-CTR keystream of one seed (counter blocks 0, 1, 2, ... from the all-zero
    block), read in order (`read_into`).

    The bytes are AES-CTR's; AES-GCM's encryptor produces them where it can, 28 % faster here
    (OpenSSL's stitched AES-GCM code on this machine's VAES cores: 10.4 against 8.1 GB/s; the
    keystreams are the largest part of a SecAgg+ client's CPU). GCM with the all-zero 96-bit IV
    encrypts with counter blocks 0^96 || 2, 3, ...: exactly CTR's from block 2 on. So the first
    two blocks come from AES itself, GCM's tag is never computed or used (its GHASH work is
    wasted, and still cheaper), and past GCM's limit of 2^32 - 2 blocks the stream goes on with
    CTR from block 2^32. Nothing about the keystream changes: same key, same counter blocks."""

    HEAD_BYTES = 32
    SEGMENT_BYTES = 1 << 36  # where GCM's counter would wrap: CTR takes over from block 2^32

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError("a mask seed has 32 bytes")
        self._seed = seed
        self._head = Cipher(algorithms.AES(seed), modes.ECB()).encryptor().update(bytes(16) + (1).to_bytes(16, "big"))
        self._encryptor = Cipher(algorithms.AES(seed), modes.GCM(bytes(12))).encryptor()
        self._position = 0

    def read_into(self, out: np.ndarray, length: int) -> None:
        """The next `length` keystream bytes into the byte buffer `out` (at least length + 16)."""
        written = 0
        if self._position < self.HEAD_BYTES and length:
            written = min(length, self.HEAD_BYTES - self._position)
            out[:written] = np.frombuffer(self._head, np.uint8)[self._position:self._position + written]
            self._position += written
        while written < length:
            if self._position == self.SEGMENT_BYTES:
                counter = (self._position // 16).to_bytes(16, "big")
                self._encryptor = Cipher(algorithms.AES(self._seed), modes.CTR(counter)).encryptor()
            step = length - written
            if self._position < self.SEGMENT_BYTES:
                step = min(step, self.SEGMENT_BYTES - self._position)
            self._encryptor.update_into(_zero_bytes(step), out[written:])
            written += step
            self._position += step


def expand(seed: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    """`count` pseudo-random integers of `dtype`, uniform over its whole range: the AES-CTR
    keystream written straight into the array."""
    dtype = np.dtype(dtype)
    length = count * dtype.itemsize
    out = np.empty(length + _SLACK, dtype=np.uint8)
    Keystream(seed).read_into(out, length)
    return out[:length].view(dtype)


def apply_masks(values: np.ndarray, added: Iterable[bytes], subtracted: Iterable[bytes] = ()) -> None:
    """values += Σ expand(a) − Σ expand(s) in place, wrapping modulo 2^bits of its unsigned
    integer dtype, one cache-sized block at a time."""
    if values.dtype.kind != "u" or not values.flags.c_contiguous:
        raise ValueError("masks apply to a contiguous array of unsigned integers")
    streams = [(Keystream(seed), np.add) for seed in added] + [(Keystream(seed), np.subtract) for seed in subtracted]
    step = BLOCK_BYTES // values.itemsize
    scratch = np.empty(step * values.itemsize + _SLACK, dtype=np.uint8)
    for start in range(0, values.size, step):
        block = values[start:start + step]
        mask = scratch[:block.nbytes].view(values.dtype)
        for stream, combine in streams:
            stream.read_into(scratch, block.nbytes)
            combine(block, mask, out=block)


def unit_floats(seed: bytes, count: int) -> np.ndarray:
    """`count` floats uniform on [0, 1), 53 random bits each, expanded from `seed`."""
    return (expand(seed, count, np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def uniform_floats(count: int) -> np.ndarray:
    """Uniform floats in [0, 1) from a fresh random key (stochastic rounding)."""
    return unit_floats(os.urandom(SEED_BYTES), count)
