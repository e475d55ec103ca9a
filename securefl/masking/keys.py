"""Key agreement and share encryption for SecAgg+.

Each client advertises two X25519 public keys per round, signed with its Ed25519 identity:
`cipher` keys agree the AES-GCM keys that protect Shamir shares in transit through the
aggregator, `mask` keys agree the pairwise mask seeds. Every derived key goes through HKDF-
SHA256 with an explicit label naming its use, the round and both client ids, so no key serves
two purposes or two rounds."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import InvalidInput, VerificationFailed
from ..identity import length_prefixed

SHARE_KEY_LABEL = b"securefl/secagg/v1/share-encryption"
MASK_SEED_LABEL = b"securefl/secagg/v1/pairwise-mask"
_NONCE_BYTES = 12


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def private_key(raw: bytes) -> X25519PrivateKey:
    """An X25519 private key from its 32 raw bytes (e.g. rebuilt from Shamir shares)."""
    return X25519PrivateKey.from_private_bytes(raw)


def _shared(private: X25519PrivateKey | bytes, peer_public: bytes) -> bytes:
    if isinstance(private, bytes):
        private = private_key(private)
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise InvalidInput("a peer's X25519 public key is invalid") from None


def derive(private: X25519PrivateKey | bytes, peer_public: bytes, label: bytes, round_id: str, a: str, b: str) -> bytes:
    """HKDF over X25519(private, peer_public), bound to label, round and the ordered pair."""
    low, high = sorted((a, b))
    info = length_prefixed(label, round_id.encode(), low.encode(), high.encode())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(_shared(private, peer_public))


def seal_share(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_share(key: bytes, sealed: bytes, associated_data: bytes, sender: str) -> bytes:
    """Decrypt a share; fails (VerificationFailed) unless it was sealed under this key with
    exactly this associated data (round, view, sender, recipient, commitments)."""
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated_data)
    except Exception:
        raise VerificationFailed(f"the share from {sender} does not decrypt for this round, view and recipient") from None


def advertisement_message(round_id: str, client_id: str, cipher_public: bytes, mask_public: bytes) -> bytes:
    """What a client signs when it advertises its round keys."""
    return length_prefixed(b"securefl/secagg/v1/advertise", round_id.encode(), client_id.encode(), cipher_public, mask_public)
