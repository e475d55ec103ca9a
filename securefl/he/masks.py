"""Per-round masks of the HE schemes: a fresh seed per client and round, sealed to the
key-holder, and the pseudo-random mask it expands to.

Sealing is ECIES over vetted primitives: an ephemeral X25519 key agrees a secret with the
key-holder's per-epoch sealing key; HKDF-SHA256 turns it into an AES-256-GCM key and nonce,
with the label, round id, client id, key epoch and both public keys in its info (also the
AEAD's associated data). The key is used once, so the derived nonce never repeats. Only the
holder of the epoch's sealing key opens a seed, and only for the round, client and epoch it
was sealed for; a seal moved to another receipt does not open (AES-GCM fails).

Masks are AES-256-CTR keystreams (`securefl/prg.py`) keyed by the seed, so client and
key-holder expand the same mask from 32 bytes:

* BFV: uniform integers modulo the plaintext prime t, by rejection sampling of 40-bit
  candidates (no modulo bias). A masked slot is then uniform on Z_t whatever it holds.
* CKKS: uniform reals in [-bound, bound] (53-bit resolution), the largest bound the
  preset's range allows (`ckks.py`)."""

from __future__ import annotations

import struct

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import VerificationFailed
from ..identity import length_prefixed
from ..prg import SEED_BYTES, expand, unit_floats

SEAL_LABEL = b"securefl/he/v1/mask-seed"
_PUBLIC_BYTES, _TAG_BYTES = 32, 16
SEALED_SEED_BYTES = _PUBLIC_BYTES + SEED_BYTES + _TAG_BYTES


def x25519_public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _seal_key(shared: bytes, info: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=info).derive(shared)
    return okm[:32], okm[32:]


def _info(round_id: str, client_id: str, epoch: int, ephemeral_public: bytes, sealing_public: bytes) -> bytes:
    return length_prefixed(SEAL_LABEL, round_id.encode(), client_id.encode(), struct.pack(">Q", epoch),
                           ephemeral_public, sealing_public)


def seal_seed(seed: bytes, sealing_public: bytes, round_id: str, client_id: str, epoch: int) -> bytes:
    """`ephemeral public key || AES-GCM(seed)`, openable only by the epoch's sealing key."""
    if len(seed) != SEED_BYTES:
        raise ValueError("a mask seed has 32 bytes")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = x25519_public_bytes(ephemeral)
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(sealing_public))
    except ValueError:
        raise VerificationFailed("the key-holder's sealing key is not a valid X25519 key") from None
    info = _info(round_id, client_id, epoch, ephemeral_public, sealing_public)
    key, nonce = _seal_key(shared, info)
    return ephemeral_public + AESGCM(key).encrypt(nonce, seed, info)


def open_seed(sealed: bytes, sealing_key: X25519PrivateKey, round_id: str, client_id: str, epoch: int) -> bytes:
    """The seed sealed for exactly this round, client and epoch; VerificationFailed otherwise."""
    if len(sealed) != SEALED_SEED_BYTES:
        raise VerificationFailed(f"client {client_id}'s sealed mask seed does not open")
    ephemeral_public = sealed[:_PUBLIC_BYTES]
    info = _info(round_id, client_id, epoch, ephemeral_public, x25519_public_bytes(sealing_key))
    try:
        key, nonce = _seal_key(sealing_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public)), info)
        return AESGCM(key).decrypt(nonce, sealed[_PUBLIC_BYTES:], info)
    except Exception:  # low-order point, wrong binding, tampering: one error, no oracle
        raise VerificationFailed(f"client {client_id}'s sealed mask seed does not open") from None


def uniform_mod(seed: bytes, count: int, modulus: int) -> np.ndarray:
    """`count` integers uniform on [0, modulus) as uint64: the top bit_length(modulus) bits of
    each keystream word, candidates >= modulus rejected. For t = 2^40 - 147455 one candidate in
    7.5 million is rejected; the first `count` accepted values are a pure function of the seed."""
    if not 1 < modulus < 2**63:
        raise ValueError("modulus must be in (1, 2^63)")
    shift = np.uint64(64 - modulus.bit_length())
    drawn = count + count // 1024 + 64
    while True:
        candidates = expand(seed, drawn, np.uint64) >> shift
        head = candidates[:count]
        if np.all(head < modulus):  # the common case: no rejection among the first `count`
            return head
        accepted = candidates[candidates < modulus]
        if accepted.size >= count:
            return accepted[:count]
        drawn *= 2  # CTR keystreams extend: the longer stream starts with the shorter one


def uniform_reals(seed: bytes, count: int, bound: float) -> np.ndarray:
    """`count` float64 uniform on [-bound, bound), 53 random bits each."""
    return (2.0 * unit_floats(seed, count) - 1.0) * bound
