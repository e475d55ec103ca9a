"""HE parameter presets (CKKS and BFV), each checked against the HE standard's 128-bit bounds.

securefl only ever adds ciphertexts and divides by the total weight after decryption, so no
multiplicative depth is needed. The add-only presets use one 60-bit data prime (plus the
special prime TenSEAL requires for its relinearisation keys): a ciphertext is then 2 × N
64-bit words. CKKS carries N/2 values in it, 32 bytes per value (8× float32), against 81 bytes
(20×) for the common [60, 40, 40, 60] chain. BFV carries N slots of integers modulo a plaintext
prime t ≈ 2^40, into which `packing.py` packs k fixed-point values each (16/k bytes per value).

BFV noise (measured with SEAL's invariant noise budget, `tests/test_bfv.py`): a fresh
ciphertext of `bfv-8192` has 12 bits of budget; the sum of 1,000 has 7 and of 4,096 has 6
(independent noise grows like the square root of the count). Even the worst case, linear
growth, leaves 12 - log2(1024) = 2 bits for sums of the 1,024 clients `max_clients` allows, and
any positive budget decrypts exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import InvalidInput

# Largest total log2(q) for 128-bit classical security with ternary secrets, by ring
# dimension (HomomorphicEncryption.org standard, Albrecht et al. 2018, Table 1).
MAX_COEFF_BITS_128: dict[int, int] = {
    1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881,
}


@dataclass(frozen=True)
class RingPreset:
    """What every preset shares: the ring and the ciphertext modulus chain."""

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]

    @property
    def data_primes(self) -> int:
        """How many primes fresh ciphertexts live under (all but the special prime)."""
        return len(self.coeff_mod_bit_sizes) - 1

    @property
    def data_prime_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes[:-1])

    def check_security(self) -> None:
        bound = MAX_COEFF_BITS_128.get(self.poly_modulus_degree)
        if bound is None:
            raise InvalidInput(f"poly_modulus_degree {self.poly_modulus_degree} is not a standard ring size")
        total = sum(self.coeff_mod_bit_sizes)
        if total > bound:
            raise InvalidInput(
                f"preset {self.name}: {total} modulus bits exceed the 128-bit bound of {bound} for N={self.poly_modulus_degree}"
            )


@dataclass(frozen=True)
class CkksPreset(RingPreset):
    scheme: ClassVar[str] = "ckks"
    scale_bits: int = 32

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def max_abs_sum(self) -> float:
        """Largest |value| of a decrypted sum that does not wrap modulo q, with a 2-bit margin
        for noise."""
        return float(2 ** (self.data_prime_bits - self.scale_bits - 2))


@dataclass(frozen=True)
class BfvPreset(RingPreset):
    """`plain_modulus` is a prime t ≡ 1 (mod 2N), so SEAL's batching gives N slots of Z_t."""

    scheme: ClassVar[str] = "bfv"
    plain_modulus: int = 0
    max_clients: int = 1  # honest sums of this many fresh ciphertexts keep a positive noise budget

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree

    @property
    def packing_bits(self) -> int:
        """Bits a packed slot may use: the packed sum stays below 2^packing_bits < t, so it never
        wraps, and values in [2^packing_bits, t) are an extra check (about half of Z_t)."""
        return self.plain_modulus.bit_length() - 1


Preset = CkksPreset | BfvPreset

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # Default: one 60-bit data prime, N=8192; measured fastest per value on this machine.
        # Scale 2^32 places the window of ~2^46 representable magnitudes at sums up to 6.7e7
        # with a fresh-encryption error of about 1e-6 per value and client.
        CkksPreset("add-only-8192", 8192, (60, 60), 32),
        CkksPreset("add-only-4096", 4096, (60, 49), 32),
        # The common chain, kept for comparison benchmarks: 2.5x the bytes of add-only.
        CkksPreset("depth2-8192", 8192, (60, 40, 40, 60), 40),
        # BFV: N = 8192 slots per 131 KB ciphertext, t = the largest 40-bit prime = 1 mod 2N
        # (SEAL's PlainModulus.Batching(8192, 40)), one 60-bit data prime.
        BfvPreset("bfv-8192", 8192, (60, 60), plain_modulus=1099511480321, max_clients=1024),
    )
}
DEFAULT_PRESET = "add-only-8192"
DEFAULT_BFV_PRESET = "bfv-8192"

for _preset in PRESETS.values():
    _preset.check_security()


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInput(f"unknown HE preset {name!r}; choose one of {sorted(PRESETS)}") from None
