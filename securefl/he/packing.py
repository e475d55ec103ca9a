"""Fixed-point packing of k values per BFV slot, with carry headroom for the sum of every
enrolled client, and the range checks of a decrypted sum.

Layout. A client's payload (`quantize.weighted_payload`: clipped w·x, then w) is scaled by
2^frac_bits and stochastically rounded (`quantize.stochastic_round`) to integers q with
|q| <= offset = 2^(client_bits-1) - 1, then offset-encoded as q + offset in [0, 2·offset].
Value j of the padded vector goes to field j // S of slot j % S (S = slots used, whole
ciphertexts); padding holds the encoding of 0. A slot is Σ_i field_i · 2^(i·field_bits).

Headroom. field_bits = client_bits + ceil(log2(max_clients)), so the sum of max_clients fields
never carries into the next field, and k · field_bits <= packing_bits (39 for t ≈ 2^40), so
the packed sum never reaches t: the BFV sum of the clients' slots *is* the packed sum of their
fields, exactly. `choose` takes the largest k that leaves at least `precision_bits` per client
value and hands every leftover bit to precision. Configurations that could overflow are
refused here, before anything is encrypted.

Checks (`unpack_sum`). For m honest clients every field lies in [0, 2·offset·m], so the packed
sum is < 2^(k·field_bits); padding fields equal m·offset exactly; the weight sum W lies in
[m, m·ceil(max_weight·2^f)] (each client's weight is at least one unit: `encode` refuses
smaller ones); and each weighted value obeys |V| <= value_bound·(W + m) + m, because
|q_v| <= ceil(w·value_bound·2^f) and w·2^f <= q_w + 1. A slot of uniform garbage on Z_t passes
even the first check with probability 2^39/t ≈ 1/2, and every ciphertext has 8,192 slots.

k for `bfv-8192` (packing_bits = 39): each client value gets client_bits =
floor(39 / k) - ceil(log2(clients)) bits, and `choose` takes the largest k with client_bits >=
precision_bits. The largest precision_bits each k allows:

| enrolled clients | k = 4 | k = 3 | k = 2 | k = 1 |
| --- | ---: | ---: | ---: | ---: |
| 2 | 8 | 12 | 18 | 38 |
| 3-4 | 7 | 11 | 17 | 37 |
| 5-8 | 6 | 10 | 16 | 36 |
| 9-16 | 5 | 9 | 15 | 35 |
| 17-32 | 4 | 8 | 14 | 34 |
| 33-64 | - | 7 | 13 | 33 |
| 65-128 | - | 6 | 12 | 32 |
| 129-256 | - | 5 | 11 | 31 |
| 257-512 | - | 4 | 10 | 30 |
| 513-1024 | - | - | 9 | 29 |

The default precision_bits = 12 packs k = 2 values per slot up to 128 clients; k = 3 needs
precision_bits <= 9 at 10 clients. Bytes per value are 16/k: 2× float32 at k = 2, 1.33× at
k = 3, 4× at k = 1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInput
from ..quantize import check_bounds, stochastic_round, weighted_payload

MIN_PRECISION_BITS = 4
DEFAULT_PRECISION_BITS = 12


class ReleaseCheckFailed(Exception):
    """A decrypted sum is not the honest sum of the receipted clients. Internal to the
    key-holder core, which audits, retires the key epoch and raises PolicyViolation."""


@dataclass(frozen=True)
class PackingPlan:
    max_clients: int
    value_bound: float
    max_weight: float
    values_per_slot: int  # k
    field_bits: int
    client_bits: int  # bits of one client's offset-encoded value
    frac_bits: int
    slots_per_chunk: int

    @classmethod
    def choose(cls, max_clients: int, precision_bits: int, value_bound: float, max_weight: float,
               packing_bits: int, slots_per_chunk: int) -> PackingPlan:
        """The densest packing giving each client at least `precision_bits`; InvalidInput if none."""
        check_bounds(value_bound, max_weight)
        if max_clients < 1:
            raise InvalidInput("max_clients must be at least 1")
        if not MIN_PRECISION_BITS <= precision_bits <= packing_bits:
            raise InvalidInput(f"precision_bits must lie in [{MIN_PRECISION_BITS}, {packing_bits}]")
        headroom = math.ceil(math.log2(max_clients))
        for k in range(packing_bits // precision_bits, 0, -1):
            field_bits = packing_bits // k
            client_bits = field_bits - headroom
            if client_bits >= precision_bits:
                offset = 2 ** (client_bits - 1) - 1
                frac_bits = math.floor(math.log2(offset / (max(value_bound, 1.0) * max_weight)))
                if max_weight * 2.0**frac_bits < 1:
                    raise InvalidInput(f"{client_bits} bits per value cannot represent any weight up to {max_weight} "
                                       f"with values up to {value_bound}; raise precision_bits or lower the bounds")
                return cls(max_clients, value_bound, max_weight, k, field_bits, client_bits, frac_bits, slots_per_chunk)
        raise InvalidInput(
            f"{max_clients} clients need {headroom} headroom bits per field: {precision_bits} bits of precision "
            f"leave no room in a {packing_bits}-bit slot; lower precision_bits or the number of enrolled clients"
        )

    @property
    def offset(self) -> int:
        return 2 ** (self.client_bits - 1) - 1

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    @property
    def max_weight_units(self) -> int:
        return math.ceil(self.max_weight * self.scale)

    def chunk_count(self, vector_length: int) -> int:
        slots = -(-vector_length // self.values_per_slot)
        return -(-slots // self.slots_per_chunk)

    def slots_used(self, vector_length: int) -> int:
        return self.chunk_count(vector_length) * self.slots_per_chunk

    def encode(self, vector: np.ndarray, weight: float) -> np.ndarray:
        """Quantize, offset and pack one client's (vector, weight); uint64 packed slots."""
        payload = weighted_payload(vector, weight, self.value_bound, self.max_weight)
        if weight * self.scale < 1:
            raise InvalidInput(f"weight {weight} is below this federation's weight resolution 2^{-self.frac_bits}")
        slots = self.slots_used(payload.size)
        fields = np.full(self.values_per_slot * slots, self.offset, dtype=np.uint64)
        fields[:payload.size] = (stochastic_round(payload * self.scale) + self.offset).astype(np.uint64)
        packed = np.zeros(slots, dtype=np.uint64)
        for index, row in enumerate(fields.reshape(self.values_per_slot, slots)):
            packed |= row << np.uint64(index * self.field_bits)
        return packed

    def unpack_sum(self, packed: np.ndarray, contributors: int, vector_length: int) -> np.ndarray:
        """The float64 weighted sum (weight sum last) of `contributors` clients from the packed
        sum of their slots, or ReleaseCheckFailed if any field is outside an honest sum's range."""
        m = contributors
        if np.any(packed >> np.uint64(self.values_per_slot * self.field_bits)):
            raise ReleaseCheckFailed("a packed slot exceeds the packed width")
        field_mask = np.uint64(2**self.field_bits - 1)
        fields = np.concatenate([(packed >> np.uint64(i * self.field_bits)) & field_mask
                                 for i in range(self.values_per_slot)])
        sums = fields.astype(np.int64) - m * self.offset
        if np.abs(sums).max() > m * self.offset:
            raise ReleaseCheckFailed("a field is outside the range of a sum of m clients")
        if np.any(sums[vector_length:]):
            raise ReleaseCheckFailed("a padding field is not the sum of encoded zeros")
        values, weight = sums[:vector_length - 1], int(sums[vector_length - 1])
        if not m <= weight <= m * self.max_weight_units:
            raise ReleaseCheckFailed("the weight sum is outside [m, m·max_weight]")
        if values.size and np.abs(values).max() > self.value_bound * (weight + m) + m:
            raise ReleaseCheckFailed("a weighted value exceeds value_bound times the weight sum")
        return sums[:vector_length] / self.scale

