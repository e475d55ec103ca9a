"""Fixed-point encoding for pairwise masking.

Values are clipped to [-value_bound, value_bound], multiplied by the client's weight, scaled
by 2^frac_bits and stochastically rounded (unbiased) to integers, then taken modulo 2^bits in
two's complement. `for_round` picks frac_bits so that the weighted sum of every possible
client, weights included, cannot wrap: |sum| < 2^(bits-1). The weight travels as one more
element with the same encoding."""

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
        if not (value_bound > 0 and max_weight > 0 and max_clients >= 1):
            raise InvalidInput("value_bound and max_weight must be positive, max_clients at least 1")
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
        if not 0 < weight <= self.max_weight:
            raise InvalidInput(f"weight {weight} is outside (0, {self.max_weight}] set for this round")
        clipped = np.clip(vector, -self.value_bound, self.value_bound)
        scaled = np.append(clipped * weight, weight) * float(2**self.frac_bits)
        floor = np.floor(scaled)
        rounded = floor + (uniform_floats(scaled.size) < (scaled - floor))
        return rounded.astype(np.int64).astype(self.dtype)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """Two's complement sum -> float64 (the weighted sum, weight sum last)."""
        signed = total.view(np.int32 if self.bits == 32 else np.int64)
        return signed.astype(np.float64) / float(2**self.frac_bits)
