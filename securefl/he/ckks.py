"""The ckks scheme's codec, hardened: real-valued masks sealed per round, range checks of the
unmasked sum against the clipping bound, and noise flooding of every released value.

Client: encrypt p + r, p = (clip(x)·w, w) padded with zeros to whole ciphertexts, r = PRG(seed)
uniform on [-R, R] with R = max_abs_sum / max_clients - max(value_bound, 1)·max_weight, the
largest mask the preset's range leaves once max_clients sums of masked values must not wrap
(float64 keeps 2^-26 resolution at 2^26, below CKKS's own error). R >= 2·max_clients·max(1,
value_bound)·max_weight is required, so a residual mask lands inside the accepted box with
probability <= 1/2 per slot.

Key-holder: U = Dec(aggregate) - Σ_{i in R} r_i; refuse unless padding slots are within the
error tolerance τ(m) of 0, the weight sum within [-τ, m·max_weight + τ], and every weighted
value within value_bound·(weight + τ) + τ. Then release U + z, z ~ N(0, σ_f²) per value.

What this resists. As for bfv (`bfv.py`), a ciphertext that is not the sum of R's ciphertexts
(a single client's with several receipts, a subset, a scaled or slot-selected sum, (0, K))
leaves some honest r_h, uniform on [-R, R] and hidden from the adversary, in the result: it
fails the checks in each slot with probability >= 1/2, over at least 4,096 slots, and the key
epoch is retired. Passively (Li–Micciancio, EUROCRYPT 2021), a party holding the aggregate
ciphertext and the release cannot compute Dec(aggregate), which the attack needs exactly in
every slot: Dec = release - z + Σ r_i, and the honest r_h are unknown.

Flooding width. The honest decryption error e of a sum of m fresh ciphertexts has per-slot
standard deviation σ_e(m) <= sqrt(m)·2^(11 - scale_bits) (measured 3.2e-7·sqrt(m) at scale
2^32; `tests/test_he_release.py` checks the bound), so over n = max(L, slots) released values
||e||² <= 2·n·m·σ_e² except with probability < e^-600. With σ_f = σ_e(m)·sqrt(2·n·Q), Q the
decryptions one key serves (`rotate_every`), the Rényi divergence of order 2 between the Q
real releases (Σp + e + z) and ideal ones that never saw the key (Σp + z) is at most
exp(Σ||e||²/σ_f²) <= e. By the probability-preservation property used by Li, Micciancio,
Schultz and Sorrell (CRYPTO 2022) to make approximate HE secure under decryption, an attack
succeeding with probability ε against ideal releases succeeds with at most sqrt(e·ε) against
real ones: 128-bit RLWE security leaves ≈ 63 bits against key recovery from honest releases.
For 1M values, 10 clients and Q = 10: σ_f ≈ 6.7e-3 on the weighted sum (divide by the weight
sum for the average).

What CKKS still leaks under active attack — use bfv (or secagg) where the aggregator or clients
may be malicious. If the adversary adds (0, K) to the honest sum (or a client submits c1 + K),
the masks cancel and U = Σp + K·s/Δ decoded: unlike BFV's exact arithmetic modulo t, CKKS
lets K be scaled down until K·s/Δ is small in every slot, so it passes the range checks and is
released (padding slots, checked against 0, do not stop it: their positions are public, and K
can be shaped to be small there without knowing s). Where the adversary can predict Σp (untouched parameters, the weight sum), it reads
noisy values of K·s — linear functions of the secret key — in every accepted round: flooding
of practical width does not hide a signal the adversary can make as large as the range check
allows. Key rotation bounds this to `rotate_every` rounds per key, not to zero."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidInput
from ..prg import uniform_floats, unit_floats
from ..quantize import check_bounds, check_payload, weighted_payload
from .masked import WholeCiphertexts
from .masks import uniform_reals
from .packing import ReleaseCheckFailed
from .presets import CkksPreset

ERROR_STD_BITS = 11  # σ_e <= 2^(ERROR_STD_BITS - scale_bits) per client and slot
TOLERANCE_SIGMAS = 10  # honest sums never exceed τ = 10 σ_e(m): P < 1e-22 per slot


class CkksCodec(WholeCiphertexts):
    scheme = "ckks"
    result_dtype = np.dtype(np.float32)  # released values carry flooding noise far above float32's resolution

    def __init__(self, preset: CkksPreset, max_clients: int, value_bound: float, max_weight: float,
                 decryptions_per_key: int = 1) -> None:
        check_bounds(value_bound, max_weight)
        if max_clients < 1 or decryptions_per_key < 1:
            raise InvalidInput("max_clients and decryptions_per_key must be at least 1")
        self.preset = preset
        self.max_clients = max_clients
        self.value_bound = value_bound
        self.max_weight = max_weight
        self.decryptions_per_key = decryptions_per_key
        box = max(value_bound, 1.0) * max_weight
        self.mask_bound = preset.max_abs_sum / max_clients - box
        if self.mask_bound < 2 * max_clients * box:
            raise InvalidInput(
                f"CKKS masks need max_clients·(2·max_clients + 1)·max(1, value_bound)·max_weight <= {preset.max_abs_sum:.3g} "
                f"(preset {preset.name}); lower max_weight (e.g. weights as fractions) or use the bfv scheme"
            )

    @property
    def chunk_values(self) -> int:
        return self.slots

    def chunk_count(self, vector_length: int) -> int:
        return -(-vector_length // self.slots)

    def check(self, vector: np.ndarray, weight: float) -> None:
        check_payload(vector, weight, self.max_weight)

    def error_std(self, contributors: int) -> float:
        return math.sqrt(contributors) * 2.0 ** (ERROR_STD_BITS - self.preset.scale_bits)

    def tolerance(self, contributors: int) -> float:
        return TOLERANCE_SIGMAS * self.error_std(contributors)

    def flooding_sigma(self, contributors: int, vector_length: int) -> float:
        released = max(vector_length, self.slots)
        return self.error_std(contributors) * math.sqrt(2 * released * self.decryptions_per_key)

    def masked_plaintext(self, vector: np.ndarray, weight: float, seed: bytes) -> np.ndarray:
        payload = weighted_payload(vector, weight, self.value_bound, self.max_weight)
        size = self.chunk_count(payload.size) * self.slots
        masked = uniform_reals(seed, size, self.mask_bound)
        masked[:payload.size] += payload
        return masked

    def reveal(self, decrypted: np.ndarray, seeds: list[bytes], vector_length: int,
               randomness: bytes = b"") -> np.ndarray:
        """Unmask, range-check (ReleaseCheckFailed), flood with noise expanded from `randomness`
        (32 bytes the key-holder derives from its key and the request; fresh if empty)."""
        m = len(seeds)
        unmasked = decrypted.copy()
        for seed in seeds:
            unmasked -= uniform_reals(seed, decrypted.size, self.mask_bound)
        tau = self.tolerance(m)
        if np.abs(unmasked[vector_length:]).max(initial=0.0) > tau:
            raise ReleaseCheckFailed("a padding slot is not zero")
        weight = unmasked[vector_length - 1]
        if not -tau <= weight <= m * self.max_weight + tau:
            raise ReleaseCheckFailed("the weight sum is outside [0, m·max_weight]")
        bound = self.value_bound * (max(weight, 0.0) + tau) + tau
        if np.abs(unmasked[:vector_length - 1]).max(initial=0.0) > bound:
            raise ReleaseCheckFailed("a weighted value exceeds value_bound times the weight sum")
        released = unmasked[:vector_length]
        return released + _gaussian(released.size, self.flooding_sigma(m, vector_length), randomness)


def _gaussian(count: int, sigma: float, seed: bytes = b"") -> np.ndarray:
    """N(0, sigma²) samples by Box–Muller from AES-CTR uniforms under the key `seed` (a fresh
    random key if empty)."""
    uniforms = unit_floats(seed, 2 * count) if seed else uniform_floats(2 * count)
    radius = np.sqrt(-2.0 * np.log1p(-uniforms[:count]))  # 1 - u lies in (0, 1]
    return sigma * radius * np.cos(2.0 * np.pi * uniforms[count:])
