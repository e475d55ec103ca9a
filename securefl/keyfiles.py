"""Files that hold a secret (a private key) or a result: created 0600 from the start, refused at
load when group or others could read them, encrypted under passphrases that never come from a
flag.

Security: `os.open(..., O_CREAT | O_EXCL, 0o600)` creates the file with its final mode in one
system call, so no other user can open it in between (a `chmod` afterwards leaves a window);
O_EXCL also refuses to follow a planted symlink or overwrite an existing key. Replacing a file
goes through a fresh private file, fsynced and renamed over the old one (and the directory
fsynced), so a crash leaves the old or the new file, never a torn one.

`PassphraseBox` is AES-256-GCM under a key derived once with scrypt (n = 2^15, r = 8, p = 1)
from the passphrase and a per-file random salt. Each sealing draws a fresh 96-bit nonce; the
caller's header is authenticated too, so neither can be swapped."""

from __future__ import annotations

import getpass
import os
import stat
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import InvalidInput, VerificationFailed

IDENTITY_PASSPHRASE_ENV = "SECUREFL_IDENTITY_PASSPHRASE"
KEY_PASSPHRASE_ENV = "SECUREFL_KEY_PASSPHRASE"  # the key-holder's keystore
PRIVATE_MODE = 0o600
SALT_BYTES, NONCE_BYTES = 16, 12


def write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Create `path` readable by its owner only and write `data`. An existing file is refused,
    unless `replace` (results, not keys): then it is replaced atomically."""
    path = Path(path)
    if not replace:
        _create(path, data)
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)  # left by a crash; never reuse its permissions
    try:
        _create(partial, data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _create(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_MODE)
    except FileExistsError:
        raise InvalidInput(f"{path} already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others may read or write (as ssh does)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise InvalidInput(f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                           f"it holds a secret: run `chmod 600 {path}`")


def read_private(path: Path) -> bytes:
    """The bytes of a secret file, after checking its mode."""
    check_private(path)
    return Path(path).read_bytes()


def create_private_file(path: Path) -> None:
    """An empty 0600 file, unless it exists (then its mode is checked): SQLite databases that
    hold results are opened on it, so they are never world-readable, not even at creation."""
    try:
        _create(Path(path), b"")
    except InvalidInput:
        check_private(path)


def passphrase(purpose: str, env: str = IDENTITY_PASSPHRASE_ENV, confirm: bool = False) -> str:
    """The passphrase from the environment, or typed at the terminal; never a command-line flag
    (flags show in `ps` and shell history)."""
    value = os.environ.get(env)
    if value:
        return value
    if not _typed_at_this_terminal():
        raise InvalidInput(f"{purpose} needs a passphrase: set {env}")
    value = getpass.getpass(f"passphrase for {purpose}: ")
    if confirm and getpass.getpass("again: ") != value:
        raise InvalidInput("the passphrases differ")
    if not value:
        raise InvalidInput(f"{purpose} needs a non-empty passphrase")
    return value


def _typed_at_this_terminal() -> bool:
    """True when someone can answer a prompt: stdin is a terminal and this process is its
    foreground job. A process that merely inherited the terminal (a service sent to the
    background, or an app run by Flower's SuperLink in its own session) would hang on a prompt
    nobody can answer, so it is told which variable to set instead."""
    try:
        return sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (AttributeError, OSError, ValueError):  # not our controlling terminal, or no stdin
        return False


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
