"""Files that hold secrets: created 0600 from the start, replaced atomically, and (for key
material) encrypted under a passphrase.

`write_private` never lets the bytes exist in a file that was, even briefly, readable by others:
the temporary file is opened with mode 0600 and O_EXCL, written, fsynced, and renamed over the
target, so a crash leaves either the old or the new file, never a torn one.

`PassphraseBox` is AES-256-GCM under a key derived once with scrypt (n = 2^15, r = 8, p = 1)
from the passphrase and a per-file random salt. Each sealing draws a fresh 96-bit nonce; the
caller's header is authenticated too, so neither can be swapped."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import InvalidInput, VerificationFailed

SALT_BYTES, NONCE_BYTES = 16, 12


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, in a file that is 0600 from its creation."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)  # left by a crash; never reuse its permissions
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class PassphraseBox:
    """Seals and opens blobs under one scrypt-derived key (derived once: scrypt costs ~0.1 s)."""

    def __init__(self, passphrase: str, salt: bytes | None = None) -> None:
        if not passphrase:
            raise InvalidInput("a passphrase is required to store secret key material")
        self.salt = salt if salt is not None else os.urandom(SALT_BYTES)
        if len(self.salt) != SALT_BYTES:
            raise InvalidInput("corrupted key file: bad salt")
        self._aead = AESGCM(Scrypt(salt=self.salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode()))

    def seal(self, header: bytes, plaintext: bytes) -> bytes:
        """`header || salt || nonce || AES-GCM(plaintext, aad=header)`."""
        nonce = os.urandom(NONCE_BYTES)
        return header + self.salt + nonce + self._aead.encrypt(nonce, plaintext, header)

    @classmethod
    def open(cls, passphrase: str, header: bytes, blob: bytes) -> tuple[PassphraseBox, bytes]:
        """Open a blob made by `seal` with this header; returns the box (to re-seal) and the
        plaintext. Any failure is the one VerificationFailed: no oracle on what was wrong."""
        if not blob.startswith(header):
            raise InvalidInput("not a securefl key file of this kind")
        rest = blob[len(header):]
        box = cls(passphrase, rest[:SALT_BYTES])
        nonce, sealed = rest[SALT_BYTES:SALT_BYTES + NONCE_BYTES], rest[SALT_BYTES + NONCE_BYTES:]
        try:
            return box, box._aead.decrypt(nonce, sealed, header)
        except Exception:
            raise VerificationFailed("cannot open the key file: wrong passphrase or corrupted file") from None

    def __reduce__(self):
        raise TypeError("key material cannot be pickled")
