"""The `plain` scheme: updates travel and are summed in the clear, through the same path as
the protected schemes. It exists to measure their overhead and test the plumbing; it protects
nothing and is never the default. The weight rides along as the last element."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput, MalformedCiphertext
from ..v1 import aggregator_pb2, common_pb2
from .scheme import Protected, RoundConfig, SingleStageRound, Stage

PLAIN = "plain"
PLAIN_CHUNK_VALUES = 65536  # 256 KiB of float32 per message


def plain_chunks(vector: np.ndarray) -> list[bytes]:
    """The plain scheme's wire form: little-endian float32, what plaintext FedAvg would send."""
    data = vector.astype("<f4")
    return [data[i:i + PLAIN_CHUNK_VALUES].tobytes() for i in range(0, data.size, PLAIN_CHUNK_VALUES)]


class PlainAccumulator:
    def __init__(self) -> None:
        self.total: np.ndarray | None = None

    def add(self, chunks: list[np.ndarray]) -> None:
        vector = np.concatenate(chunks).astype(np.float64)
        if self.total is None:
            self.total = vector
        else:
            self.total += vector


class PlainRound(SingleStageRound):
    def reveal(self, accumulator: PlainAccumulator, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        assert accumulator.total is not None
        return accumulator.total


class PlainServer:
    name = PLAIN
    chunk_values = PLAIN_CHUNK_VALUES
    survives_restart = True

    def describe(self, session: aggregator_pb2.Session) -> None:
        session.max_abs_sum = float(np.finfo(np.float32).max)

    def new_round(self, round_id: str, config: RoundConfig, opened_at: float) -> PlainRound:
        return PlainRound()

    def new_accumulator(self) -> PlainAccumulator:
        return PlainAccumulator()

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> np.ndarray:
        if len(data) != 4 * expected_values:
            raise MalformedCiphertext(f"chunk {index} has {len(data)} bytes, expected {4 * expected_values}")
        values = np.frombuffer(data, dtype="<f4")
        if not np.all(np.isfinite(values)):
            raise MalformedCiphertext(f"chunk {index} holds NaN or infinite values")
        return values


class PlainClientRound:
    def __init__(self, payload: np.ndarray) -> None:
        self._payload = payload

    def answer(self, stage: Stage) -> bytes:
        raise InvalidInput(f"the plain scheme has no stage {stage.name!r:.40}")

    def protect(self, stage: Stage) -> Protected:
        return Protected(plain_chunks(self._payload), self._payload.size)


class PlainClient:
    name = PLAIN
    interactive = False

    def check(self, vector: np.ndarray, weight: float) -> None:
        """What the aggregator would refuse: values that are not finite as float32."""
        weighted = np.asarray(vector, dtype=np.float64) * weight
        if not (np.all(np.isfinite(weighted)) and np.abs(weighted).max(initial=0.0) <= np.finfo(np.float32).max):
            raise InvalidInput("the weighted update holds NaN or values beyond float32's range")

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> PlainClientRound:
        return PlainClientRound(np.append(vector * weight, weight))
