"""Fixed-point encoding shared by SecAgg+ (pairwise masking) and BFV (packed HE).

Values are clipped to [-value_bound, value_bound], multiplied by the client's weight, the weight
is appended as one more element (`weighted_payload`), everything is scaled by 2^frac_bits and
stochastically rounded (unbiased) to integers (`stochastic_round`). SecAgg+ then takes them
modulo 2^bits in two's complement (`FixedPoint`): `for_round` picks frac_bits so that the
weighted sum of every possible client, weights included, cannot wrap: |sum| < 2^(bits-1).
BFV offsets them into packed fields instead (`securefl.he.packing`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInput
from .prg import SEED_BYTES, expand

MIN_FRAC_BITS = 8
BLOCK_VALUES = 1 << 15  # values encoded at a time: their float64 working copies stay in cache
UNIT_32 = 1.0 / (1 << 32)


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
        """Clip, weight, append the weight, scale and round stochastically; returns dtype ints.
        Works through the update in cache-sized blocks: one float64 block at a time, never a
        float64 copy of the whole update."""
        check_payload(vector, weight, self.max_weight)
        flat = np.asarray(vector).reshape(-1)
        encoded = np.empty(flat.size + 1, dtype=self.dtype)
        factor = weight * float(2**self.frac_bits)
        for start in range(0, flat.size, BLOCK_VALUES):
            stop = min(start + BLOCK_VALUES, flat.size)
            scaled = np.clip(flat[start:stop].astype(np.float64), -self.value_bound, self.value_bound)
            scaled *= factor
            np.copyto(encoded[start:stop], stochastic_round(scaled), casting="unsafe")
        np.copyto(encoded[-1:], stochastic_round(np.array([factor])), casting="unsafe")
        return encoded

    def decode(self, total: np.ndarray) -> np.ndarray:
        """Two's complement sum -> float64 (the weighted sum, weight sum last)."""
        signed = total.view(np.int32 if self.bits == 32 else np.int64)
        return signed.astype(np.float64) / float(2**self.frac_bits)


def check_bounds(value_bound: float, max_weight: float) -> None:
    """The clipping bound and the largest weight of a federation: positive and finite."""
    if not (math.isfinite(value_bound) and value_bound > 0 and math.isfinite(max_weight) and max_weight > 0):
        raise InvalidInput("value_bound and max_weight must be positive and finite")


def check_payload(vector: np.ndarray, weight: float, max_weight: float) -> None:
    """Refuses a weight outside (0, max_weight] and NaN or infinite values (they would round to
    garbage)."""
    if not 0 < weight <= max_weight:
        raise InvalidInput(f"weight {weight} is outside (0, {max_weight}] set for this round")
    if not np.all(np.isfinite(vector)):
        raise InvalidInput("the update holds NaN or infinite values")


def weighted_payload(vector: np.ndarray, weight: float, value_bound: float, max_weight: float) -> np.ndarray:
    """`clip(vector, ±value_bound) · weight` with the weight appended, as float64 (checked as
    `check_payload` does)."""
    check_payload(vector, weight, max_weight)
    vector = np.asarray(vector, dtype=np.float64)
    return np.append(np.clip(vector, -value_bound, value_bound) * weight, weight)


def stochastic_round(scaled: np.ndarray) -> np.ndarray:
    """Round each value to floor or ceil with probabilities making it unbiased (to 2^-32: 32
    bits of AES-CTR randomness under a fresh key per value); |result| <= ceil(|value|), and a
    value that is already an integer stays."""
    rounded = np.floor(scaled)
    uniforms = expand(os.urandom(SEED_BYTES), scaled.size, np.uint32) * UNIT_32
    rounded += uniforms < (scaled - rounded)
    return rounded.astype(np.int64)
