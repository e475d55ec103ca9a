"""Masks from AES-256-CTR keystreams (`cryptography`), straight into numpy arrays.

A seed is used for exactly one mask: pairwise seeds are derived per round and pair, self-mask
seeds are fresh per round, so the all-zero nonce never repeats under one key."""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32


def expand(seed: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    """`count` pseudo-random integers of `dtype`, uniform over its whole range."""
    if len(seed) != SEED_BYTES:
        raise ValueError("a mask seed has 32 bytes")
    dtype = np.dtype(dtype)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    out = bytearray(count * dtype.itemsize + 15)
    written = encryptor.update_into(bytes(count * dtype.itemsize), out)
    return np.frombuffer(out, dtype=dtype, count=count) if written else np.zeros(0, dtype=dtype)


def uniform_floats(count: int) -> np.ndarray:
    """Uniform floats in [0, 1) from a fresh random key (stochastic rounding)."""
    bits = expand(os.urandom(SEED_BYTES), count, np.uint64)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
