"""Fixed-point encoding shared by SecAgg+ (pairwise masking) and BFV (packed HE).

Values are clipped to [-value_bound, value_bound], multiplied by the client's weight, the weight
is appended as one more element (`weighted_payload`), everything is scaled by 2^frac_bits and
stochastically rounded (unbiased) to integers (`stochastic_round`). SecAgg+ then takes them
modulo 2^bits in two's complement (`FixedPoint`): `for_round` picks frac_bits so that the
weighted sum of every possible client, weights included, cannot wrap: |sum| < 2^(bits-1).
BFV offsets them into packed fields instead (`securefl.he.packing`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput
from .masking.prg import uniform_floats

MIN_FRAC_BITS = 8


@dataclass(frozen=True)
class FixedPoint:
    bits: int  # 32 or 64: sums wrap natively in numpy's unsigned arithmetic
    frac_bits: int
    value_bound: float
    max_weight: float

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.bits == 32 else np.uint64)

    @classmethod
    def for_round(cls, max_clients: int, value_bound: float, max_weight: float, bits: int = 32) -> FixedPoint:
        """The finest resolution at which `max_clients` weighted updates cannot overflow."""
        if bits not in (32, 64):
            raise InvalidInput("bits must be 32 or 64")
        check_bounds(value_bound, max_weight)
        if max_clients < 1:
            raise InvalidInput("max_clients must be at least 1")
        largest = max_clients * max(value_bound, 1.0) * max_weight  # |weighted value| and |weight| alike
        frac_bits = bits - 2 - math.ceil(math.log2(largest))
        if frac_bits < MIN_FRAC_BITS:
            raise InvalidInput(
                f"{max_clients} clients with values up to {value_bound} and weights up to {max_weight} leave "
                f"{frac_bits} fractional bits in {bits}-bit arithmetic; lower value_bound or max_weight, or use 64 bits"
            )
        return cls(bits, frac_bits, value_bound, max_weight)

    def encode(self, vector: np.ndarray, weight: float) -> np.ndarray:
        """Clip, weight, append the weight, scale and round stochastically; returns dtype ints."""
        payload = weighted_payload(vector, weight, self.value_bound, self.max_weight)
        return stochastic_round(payload * float(2**self.frac_bits)).astype(self.dtype)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """Two's complement sum -> float64 (the weighted sum, weight sum last)."""
        signed = total.view(np.int32 if self.bits == 32 else np.int64)
        return signed.astype(np.float64) / float(2**self.frac_bits)


def check_bounds(value_bound: float, max_weight: float) -> None:
    """The clipping bound and the largest weight of a federation: positive and finite."""
    if not (math.isfinite(value_bound) and value_bound > 0 and math.isfinite(max_weight) and max_weight > 0):
        raise InvalidInput("value_bound and max_weight must be positive and finite")


def weighted_payload(vector: np.ndarray, weight: float, value_bound: float, max_weight: float) -> np.ndarray:
    """`clip(vector, ±value_bound) · weight` with the weight appended, as float64. Refuses a
    weight outside (0, max_weight] and NaN or infinite values (they would round to garbage)."""
    if not 0 < weight <= max_weight:
        raise InvalidInput(f"weight {weight} is outside (0, {max_weight}] set for this round")
    vector = np.asarray(vector, dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        raise InvalidInput("the update holds NaN or infinite values")
    return np.append(np.clip(vector, -value_bound, value_bound) * weight, weight)


def stochastic_round(scaled: np.ndarray) -> np.ndarray:
    """Round each value to floor or ceil with probabilities making it unbiased (AES-CTR
    randomness under a fresh key); |result| <= ceil(|value|)."""
    floor = np.floor(scaled)
    return (floor + (uniform_floats(scaled.size) < (scaled - floor))).astype(np.int64)
