"""CKKS parameter presets, each checked against the HE standard's 128-bit bounds.

securefl only ever adds ciphertexts and divides by the total weight after decryption, so no
multiplicative depth is needed. The add-only presets use one 60-bit data prime (plus the
special prime TenSEAL requires for its relinearisation keys): a ciphertext is then 2 × N
64-bit words for N/2 values, 32 bytes per value (8× float32), against 81 bytes (20×) for the
common [60, 40, 40, 60] chain."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput

# Largest total log2(q) for 128-bit classical security with ternary secrets, by ring
# dimension (HomomorphicEncryption.org standard, Albrecht et al. 2018, Table 1).
MAX_COEFF_BITS_128: dict[int, int] = {
    1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881,
}


@dataclass(frozen=True)
class CkksPreset:
    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def data_prime_bits(self) -> int:
        """Bits of the modulus fresh ciphertexts live under (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def ciphertext_bytes(self) -> int:
        """Bound on one fresh ciphertext, serialized or parsed: 2 polynomials of N 64-bit words
        per data prime, plus a quarter for headers and TenSEAL's objects (measured: 131 kB on
        the wire and 156 kB in memory for the default preset)."""
        return 2 * self.poly_modulus_degree * 8 * (len(self.coeff_mod_bit_sizes) - 1) * 5 // 4

    @property
    def max_abs_sum(self) -> float:
        """Largest |value| of a decrypted sum that does not wrap modulo q, with a 2-bit margin
        for noise."""
        return float(2 ** (self.data_prime_bits - self.scale_bits - 2))

    def check_security(self) -> None:
        bound = MAX_COEFF_BITS_128.get(self.poly_modulus_degree)
        if bound is None:
            raise InvalidInput(f"poly_modulus_degree {self.poly_modulus_degree} is not a standard ring size")
        total = sum(self.coeff_mod_bit_sizes)
        if total > bound:
            raise InvalidInput(
                f"preset {self.name}: {total} modulus bits exceed the 128-bit bound of {bound} for N={self.poly_modulus_degree}"
            )


PRESETS: dict[str, CkksPreset] = {
    p.name: p
    for p in (
        # Default: one 60-bit data prime, N=8192; measured fastest per value on this machine.
        # Scale 2^32 places the window of ~2^46 representable magnitudes at sums up to 6.7e7
        # with a fresh-encryption error of about 1e-6 per value and client.
        CkksPreset("add-only-8192", 8192, (60, 60), 32),
        CkksPreset("add-only-4096", 4096, (60, 49), 32),
        # The common chain, kept for comparison benchmarks: 2.5x the bytes of add-only.
        CkksPreset("depth2-8192", 8192, (60, 40, 40, 60), 40),
    )
}
DEFAULT_PRESET = "add-only-8192"

for _preset in PRESETS.values():
    _preset.check_security()


def get_preset(name: str) -> CkksPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInput(f"unknown CKKS preset {name!r}; choose one of {sorted(PRESETS)}") from None
