"""Protection schemes behind one aggregator: what a submitted chunk is, how the aggregator
adds it into a round's running sum in place, and how the final sum is revealed.

`plain` exists to measure overhead and test the plumbing; it protects nothing and is never
the default. `ckks` lives in securefl.he.aggregation."""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Protocol

import numpy as np

from .errors import InvalidInput, MalformedCiphertext
from .v1 import common_pb2

PLAIN, CKKS, SECAGG = "plain", "ckks", "secagg"
SCHEMES = (CKKS, SECAGG, PLAIN)

PLAIN_CHUNK_VALUES = 65536  # 256 KiB of float32 per message
RESULT_CHUNK_VALUES = 131072  # 1 MiB of float64 per message


class Accumulator(Protocol):
    """One round's running sum. Memory is O(model), whatever the number of clients."""

    def add(self, chunks: list[Any]) -> None:
        """Add one whole, validated submission into the sum, in place."""


class AggregationScheme(Protocol):
    name: str
    chunk_values: int
    max_abs_sum: float

    def expected_submissions(self, round_id: str, configured: int) -> int:
        """How many submissions close the round early (0: wait for the deadline)."""

    def submission_deadline(self, round_id: str, opened_at: float, timeout_seconds: float) -> float | None:
        """When the round stops taking submissions."""

    def check_submitter(self, round_id: str, client_id: str) -> None:
        """Raise unless this client may submit to the round now."""

    def new_accumulator(self) -> Accumulator: ...

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> Any:
        """Validate one untrusted chunk; raise MalformedCiphertext. Changes no state."""

    def reveal(self, accumulator: Accumulator, round_id: str, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        """Turn the running sum into the plaintext sum vector (weights included)."""


def chunk_count(vector_length: int, chunk_values: int) -> int:
    return -(-vector_length // chunk_values)


def chunk_length(index: int, vector_length: int, chunk_values: int) -> int:
    """How many values chunk `index` of a vector of `vector_length` values holds."""
    return min(chunk_values, vector_length - index * chunk_values)


def plain_chunks(vector: np.ndarray) -> list[bytes]:
    """The plain scheme's wire form: little-endian float32, what plaintext FedAvg would send."""
    data = vector.astype("<f4")
    return [data[i:i + PLAIN_CHUNK_VALUES].tobytes() for i in range(0, data.size, PLAIN_CHUNK_VALUES)]


class SingleStageScheme:
    """Schemes whose only client message is the protected update: the round's configuration
    alone decides when it closes."""

    def expected_submissions(self, round_id: str, configured: int) -> int:
        return configured

    def submission_deadline(self, round_id: str, opened_at: float, timeout_seconds: float) -> float | None:
        return opened_at + timeout_seconds if timeout_seconds else None

    def check_submitter(self, round_id: str, client_id: str) -> None:
        return None


class PlainAccumulator:
    def __init__(self) -> None:
        self.total: np.ndarray | None = None

    def add(self, chunks: list[np.ndarray]) -> None:
        vector = np.concatenate(chunks).astype(np.float64)
        if self.total is None:
            self.total = vector
        else:
            self.total += vector


class PlainScheme(SingleStageScheme):
    name = PLAIN
    chunk_values = PLAIN_CHUNK_VALUES
    max_abs_sum = float(np.finfo(np.float32).max)

    def new_accumulator(self) -> PlainAccumulator:
        return PlainAccumulator()

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> np.ndarray:
        if len(data) != 4 * expected_values:
            raise MalformedCiphertext(f"chunk {index} has {len(data)} bytes, expected {4 * expected_values}")
        values = np.frombuffer(data, dtype="<f4")
        if not np.all(np.isfinite(values)):
            raise MalformedCiphertext(f"chunk {index} holds NaN or infinite values")
        return values

    def reveal(self, accumulator: PlainAccumulator, round_id: str, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        assert accumulator.total is not None
        return accumulator.total


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
