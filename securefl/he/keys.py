"""CKKS key material: generation, the public context, fingerprints, and the secret context
encrypted at rest.

Security: the secret key lives only in `SecretContext`, which refuses pickling and never
appears in repr. What leaves the key-holder is `public_bytes`, serialized without the secret
key; its SHA-256 fingerprint is what clients pin."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import tenseal as ts
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import InvalidInput, VerificationFailed
from ..keyfiles import read_private, write_private
from .presets import CkksPreset

_KEYFILE_MAGIC = b"SFLKEY1\n"
_SALT_BYTES, _NONCE_BYTES = 16, 12


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


class SecretContext:
    """The key-holder's CKKS context, secret key included."""

    def __init__(self, context: ts.Context, preset: CkksPreset, public_bytes: bytes | None = None) -> None:
        """`public_bytes` is kept from generation: TenSEAL does not re-serialize a reloaded
        context to the same bytes, and the fingerprint clients pin must survive restarts."""
        if not context.is_private():
            raise InvalidInput("a SecretContext needs the secret key")
        self.context = context
        self.preset = preset
        self.public_bytes = public_bytes or context.serialize(save_secret_key=False)
        self.fingerprint = fingerprint(self.public_bytes)

    @classmethod
    def generate(cls, preset: CkksPreset) -> SecretContext:
        preset.check_security()
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=preset.poly_modulus_degree,
            coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
            n_threads=1,
        )
        context.global_scale = 2.0**preset.scale_bits
        return cls(context, preset)

    def save(self, path: Path, passphrase: str) -> None:
        """Write the secret context (and the exact public bytes clients pin) encrypted with
        AES-256-GCM under a scrypt-derived key; the header is authenticated too."""
        if not passphrase:
            raise InvalidInput("a passphrase is required to store the secret key")
        salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
        header = _KEYFILE_MAGIC + self.preset.name.encode() + b"\n"
        secret = self.context.serialize(save_secret_key=True)
        plaintext = struct.pack(">Q", len(self.public_bytes)) + self.public_bytes + secret
        sealed = AESGCM(_derive_key(passphrase, salt)).encrypt(nonce, plaintext, header)
        write_private(path, header + salt + nonce + sealed)

    @classmethod
    def load(cls, path: Path, passphrase: str) -> SecretContext:
        from .presets import get_preset

        blob = read_private(path)
        if not blob.startswith(_KEYFILE_MAGIC):
            raise InvalidInput(f"{path} is not a securefl key file")
        header_end = blob.index(b"\n", len(_KEYFILE_MAGIC)) + 1
        header, rest = blob[:header_end], blob[header_end:]
        preset = get_preset(header[len(_KEYFILE_MAGIC):-1].decode())
        salt, nonce, sealed = rest[:_SALT_BYTES], rest[_SALT_BYTES:_SALT_BYTES + _NONCE_BYTES], rest[_SALT_BYTES + _NONCE_BYTES:]
        try:
            plaintext = AESGCM(_derive_key(passphrase, salt)).decrypt(nonce, sealed, header)
        except Exception:
            raise VerificationFailed("cannot open the key file: wrong passphrase or corrupted file") from None
        (public_length,) = struct.unpack(">Q", plaintext[:8])
        public_bytes, secret = plaintext[8:8 + public_length], plaintext[8 + public_length:]
        return cls(ts.context_from(secret, n_threads=1), preset, public_bytes)

    def __reduce__(self):
        raise TypeError("secret key material cannot be pickled")

    def __repr__(self) -> str:
        return f"SecretContext(preset={self.preset.name!r}, fingerprint={self.fingerprint.hex()[:16]}…)"


def _derive_key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
