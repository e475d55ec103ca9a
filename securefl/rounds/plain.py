"""The `plain` scheme: updates travel and are summed in the clear, through the same path as
the protected schemes. It exists to measure their overhead and test the plumbing; it protects
nothing and is never the default. The weight rides along as the last element.

Sums stay in float32, as plaintext FedAvg's would: the updates arrive as float32, and a float64
sum would cost a conversion per submission (10x the add) for digits the inputs never had."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InvalidInput, MalformedCiphertext
from ..v1 import aggregator_pb2, common_pb2
from .accumulate import ChunkedSum, array_ops
from .chunks import split_array
from .scheme import Protected, RoundConfig, SingleStageRound, Stage

PLAIN = "plain"
PLAIN_CHUNK_VALUES = 262144  # 1 MiB of float32 per message: fewer, larger messages cost gRPC less


def plain_chunks(vector: np.ndarray, chunk_values: int = PLAIN_CHUNK_VALUES) -> list[bytes]:
    """The plain scheme's wire form: little-endian float32, what plaintext FedAvg would send."""
    return split_array(vector.astype(np.float32), chunk_values)


class PlainRound(SingleStageRound):
    def reveal(self, accumulator: ChunkedSum, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        return accumulator.concatenated()


class PlainServer:
    name = PLAIN
    chunk_values = PLAIN_CHUNK_VALUES
    chunk_bytes = 4 * PLAIN_CHUNK_VALUES
    result_dtype = np.dtype(np.float32)

    def describe(self, session: aggregator_pb2.Session) -> None:
        session.max_abs_sum = float(np.finfo(np.float32).max)

    def new_round(self, round_id: str, config: RoundConfig, opened_at: float,
                  clock: Callable[[], float]) -> PlainRound:
        return PlainRound()

    def new_accumulator(self) -> ChunkedSum:
        return ChunkedSum(array_ops(np.dtype(np.float32)))

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> np.ndarray:
        if len(data) != 4 * expected_values:
            raise MalformedCiphertext(f"chunk {index} has {len(data)} bytes, expected {4 * expected_values}")
        values = np.frombuffer(data, dtype="<f4")
        if not np.all(np.isfinite(values)):
            raise MalformedCiphertext(f"chunk {index} holds NaN or infinite values")
        return values


class PlainClientRound:
    def __init__(self, payload: np.ndarray, chunk_values: int) -> None:
        self._payload = payload
        self._chunk_values = chunk_values

    def answer(self, stage: Stage) -> bytes:
        raise InvalidInput(f"the plain scheme has no stage {stage.name!r:.40}")

    def protect(self, stage: Stage) -> Protected:
        return Protected(plain_chunks(self._payload, self._chunk_values), self._payload.size)


class PlainClient:
    name = PLAIN
    interactive = False

    def __init__(self, chunk_values: int = PLAIN_CHUNK_VALUES) -> None:
        self._chunk_values = chunk_values  # the aggregator's (Session.chunk_values)

    def check(self, vector: np.ndarray, weight: float) -> None:
        """What the aggregator would refuse: values that are not finite as float32."""
        weighted = np.asarray(vector, dtype=np.float64) * weight
        if not (np.all(np.isfinite(weighted)) and np.abs(weighted).max(initial=0.0) <= np.finfo(np.float32).max):
            raise InvalidInput("the weighted update holds NaN or values beyond float32's range")

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> PlainClientRound:
        return PlainClientRound(np.append(vector * weight, weight), self._chunk_values)
