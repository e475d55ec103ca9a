"""A client round's state kept outside the client process between stages, sealed.

Some transports keep no client process alive between the stages of a round: Flower runs a
ClientApp per message and keeps node state for it (`Context.state`), which its simulation
pickles into worker processes and its SuperNode holds between messages. An interactive
scheme's client state holds the round's secrets (X25519 keys, the self-mask seed, the shares
held for neighbours, the encoded update), so it is handed over only sealed: AES-256-GCM under a
key derived with HKDF-SHA256 from the site's Ed25519 identity key, which stays in the identity
file and is read back from it when a stage arrives. Whoever holds the sealed state (the host,
a pickle, a log) learns nothing from it and cannot alter it; the associated data binds it to
what the transport names (run, node, round), so a state cannot be replayed into another round
or node. Opening fails with the one verification error, whatever is wrong."""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import VerificationFailed
from ..identity import Identity

_KEY_INFO = b"securefl/client-state/v1/key"
_AAD_TAG = b"securefl/client-state/v1"
_NONCE_BYTES = 12


def _key(identity: Identity) -> AESGCM:
    seed = identity.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(seed))


def _associated(binding: tuple[str, ...]) -> bytes:
    return _AAD_TAG + b"".join(struct.pack(">I", len(f)) + f for f in (part.encode() for part in binding))


def seal(identity: Identity, binding: tuple[str, ...], state: bytes) -> bytes:
    """`state` encrypted for this identity alone, bound to `binding` (e.g. run, node, round)."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _key(identity).encrypt(nonce, state, _associated(binding))


def unseal(identity: Identity, binding: tuple[str, ...], sealed: bytes) -> bytes:
    """The state `seal` wrote for the same identity and binding; VerificationFailed otherwise."""
    try:
        return _key(identity).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _associated(binding))
    except Exception:
        raise VerificationFailed("the kept client state does not open for this identity, node and round") from None
