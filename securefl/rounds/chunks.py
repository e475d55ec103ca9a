"""Payloads on any transport are streamed in chunks; these are the chunking rules and the
digest a receipt signs."""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from ..errors import InvalidInput

RESULT_CHUNK_VALUES = 131072  # 1 MiB of float64 per message


def chunk_count(vector_length: int, chunk_values: int) -> int:
    return -(-vector_length // chunk_values)


def chunk_length(index: int, vector_length: int, chunk_values: int) -> int:
    """How many values chunk `index` of a vector of `vector_length` values holds."""
    return min(chunk_values, vector_length - index * chunk_values)


class ChunkDigest:
    """SHA-256 over (index, length, bytes) of each chunk in order: what a receipt signs."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"securefl/chunks/v1")

    def update(self, index: int, data: bytes) -> None:
        self._hash.update(struct.pack(">II", index, len(data)))
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    @classmethod
    def of(cls, chunks: list[bytes]) -> bytes:
        digest = cls()
        for index, data in enumerate(chunks):
            digest.update(index, data)
        return digest.digest()


def float64_chunks(vector: np.ndarray) -> list[bytes]:
    """Plaintext results on the wire (decrypted sums, published averages)."""
    data = vector.astype("<f8")
    return [data[i:i + RESULT_CHUNK_VALUES].tobytes() for i in range(0, data.size, RESULT_CHUNK_VALUES)] or [b""]


def join_float64(chunks: list[bytes], expected_length: int) -> np.ndarray:
    vector = np.frombuffer(b"".join(chunks), dtype="<f8")
    if vector.size != expected_length:
        raise InvalidInput(f"result has {vector.size} values, expected {expected_length}")
    return vector.copy()
