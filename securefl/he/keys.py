"""HE key material (CKKS and BFV): generation, the public context, and fingerprints. The secret
context is stored only inside the key-holder's encrypted keystore (`keystore.py`).

Security: the secret key lives only in `SecretContext`, which refuses pickling and never
appears in repr. What leaves the key-holder is `public_bytes`: the public key alone, without
the secret key and without relinearisation or Galois keys (securefl only adds ciphertexts, and
a context that cannot rotate or relinearise gives a malicious aggregator fewer tools)."""

from __future__ import annotations

import hashlib

import tenseal as ts

from ..errors import InvalidInput
from .presets import BfvPreset, Preset


def fingerprint(public_context: bytes) -> bytes:
    return hashlib.sha256(public_context).digest()


def load_public_context(data: bytes) -> ts.Context:
    """Parse a public context received over the network; refuse one that carries a secret key."""
    try:
        context = ts.context_from(data, n_threads=1)
    except Exception as exc:  # TenSEAL raises several native types
        raise InvalidInput(f"not a TenSEAL context: {exc}") from None
    if context.is_private():
        raise InvalidInput("refusing a context that carries a secret key")
    return context


def load_secret_context(data: bytes) -> ts.Context:
    """Parse a context with its secret key, as the key-holder hands it to its decryption workers."""
    context = ts.context_from(data, n_threads=1)
    if not context.is_private():
        raise InvalidInput("a decryption needs a context with its secret key")
    return context


def public_bytes_of(context: ts.Context) -> bytes:
    """The public key alone: what clients encrypt with and the aggregator adds under."""
    return context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


class SecretContext:
    """The key-holder's HE context (CKKS or BFV), secret key included."""

    def __init__(self, context: ts.Context, preset: Preset, public_bytes: bytes | None = None) -> None:
        """`public_bytes` is kept from generation: TenSEAL does not re-serialize a reloaded
        context to the same bytes, and the fingerprint clients pin must survive restarts."""
        if not context.is_private():
            raise InvalidInput("a SecretContext needs the secret key")
        self.context = context
        self.preset = preset
        self.public_bytes = public_bytes or public_bytes_of(context)
        self.fingerprint = fingerprint(self.public_bytes)

    @classmethod
    def generate(cls, preset: Preset) -> SecretContext:
        preset.check_security()
        if isinstance(preset, BfvPreset):
            context = ts.context(
                ts.SCHEME_TYPE.BFV,
                poly_modulus_degree=preset.poly_modulus_degree,
                plain_modulus=preset.plain_modulus,
                coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
                n_threads=1,
            )
            if not context.seal_context().data.first_context_data().qualifiers().using_batching:
                raise InvalidInput(f"preset {preset.name}: the plaintext modulus does not allow batching")
        else:
            context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=preset.poly_modulus_degree,
                coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
                n_threads=1,
            )
            context.global_scale = 2.0**preset.scale_bits
        return cls(context, preset)

    def secret_bytes(self) -> bytes:
        """The whole context with its secret key: only ever written encrypted (the keystore)."""
        return self.context.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                      save_relin_keys=False)

    @classmethod
    def from_bytes(cls, secret: bytes, preset: Preset, public_bytes: bytes) -> SecretContext:
        return cls(ts.context_from(secret, n_threads=1), preset, public_bytes)

    def __reduce__(self):
        raise TypeError("secret key material cannot be pickled")

    def __repr__(self) -> str:
        return f"SecretContext(preset={self.preset.name!r}, fingerprint={self.fingerprint.hex()[:16]}…)"

