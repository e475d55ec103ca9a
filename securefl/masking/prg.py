"""Masks from AES-256-CTR keystreams (`cryptography`), straight into numpy arrays.

A seed is used for exactly one mask: pairwise seeds are derived per round and pair, self-mask
seeds are fresh per round, so the all-zero nonce never repeats under one key."""

from __future__ import annotations

import os
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32


_zeros = b""
_zeros_lock = threading.Lock()


def _zero_bytes(length: int) -> memoryview:
    """A shared read-only run of zero bytes to encrypt (allocating it per mask costs 4x the AES)."""
    global _zeros
    with _zeros_lock:
        if len(_zeros) < length:
            _zeros = bytes(length)
        return memoryview(_zeros)[:length]


def expand(seed: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    """`count` pseudo-random integers of `dtype`, uniform over its whole range: the AES-CTR
    keystream written straight into the array."""
    if len(seed) != SEED_BYTES:
        raise ValueError("a mask seed has 32 bytes")
    dtype = np.dtype(dtype)
    length = count * dtype.itemsize
    out = np.empty(length + 16, dtype=np.uint8)  # update_into wants a block of slack
    if length:
        Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update_into(_zero_bytes(length), out)
    return out[:length].view(dtype)


def unit_floats(seed: bytes, count: int) -> np.ndarray:
    """`count` floats uniform on [0, 1), 53 random bits each, expanded from `seed`."""
    return (expand(seed, count, np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def uniform_floats(count: int) -> np.ndarray:
    """Uniform floats in [0, 1) from a fresh random key (stochastic rounding)."""
    return unit_floats(os.urandom(SEED_BYTES), count)
