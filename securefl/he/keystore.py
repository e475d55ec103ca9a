"""The key-holder's keystore: its long-term Ed25519 signing key, the current key epoch (HE
secret context + X25519 sealing key), epochs replaced on schedule while their rounds finish,
and each epoch's record of the rounds it serves — all in one file encrypted at rest.

Epoch policy.
* The aggregator registers each round before clients encrypt (`epoch_for_round`): the round is
  bound to the current epoch, whose signed `PublicEpoch` the clients receive. An epoch serves at
  most `rotate_every` rounds; the next registration starts a new epoch.
* A replaced epoch stays only for the rounds it still serves, and at most `grace_seconds`;
  then its keys are deleted.
* A refused release retires its epoch at once (`retire`): keys deleted, a new current epoch.
  So one key decrypts at most `rotate_every` rounds and meets at most one refusal.
* "Never decrypt the same round twice" is part of the key: a round is marked decrypted, durably,
  before its decryption, in the same encrypted file as the key, and rounds of deleted epochs stay
  in a spent list. Copying the key file to a second key-holder with another database no longer
  helps: the record travels with the key, and an exclusive lock (`<file>.lock`) stops a second
  process from using the same file while the first runs. (Restoring an old copy of the file is
  outside what software alone can prevent; the key-holder is trusted to keep its files.)

At rest: JSON inside AES-256-GCM under a scrypt-derived key (`keyfiles.PassphraseBox`), in a
file that is 0600 from its creation and replaced atomically on every change."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import DuplicateSubmission, InvalidInput, PolicyViolation
from ..identity import check_identifier
from ..keyfiles import PassphraseBox, read_private, write_private
from ..v1 import common_pb2
from .epochs import EpochSettings, sign_epoch
from .keys import SecretContext
from .masked import MaskedCodec
from .masks import x25519_public_bytes
from .presets import get_preset

_MAGIC = b"SFLKEYSTORE1\n"
OPEN, DECRYPTED = "open", "decrypted"


@dataclass(frozen=True)
class RotationPolicy:
    rotate_every: int = 10
    grace_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.rotate_every < 1 or self.grace_seconds < 0:
            raise InvalidInput("rotate_every must be at least 1 and grace_seconds not negative")


@dataclass(eq=False)
class KeyEpoch:
    """One epoch's secrets and its round record. Never pickled, never shown."""

    number: int
    secret: SecretContext = field(repr=False)
    sealing_key: X25519PrivateKey = field(repr=False)
    public: common_pb2.PublicEpoch = field(repr=False)
    rounds: dict[str, str] = field(default_factory=dict)
    replaced_at: float | None = None
    secret_bytes: bytes = field(default=b"", repr=False)

    def codec(self, decryptions_per_key: int) -> MaskedCodec:
        return EpochSettings.of(self.public).codec(decryptions_per_key)

    def __reduce__(self):
        raise TypeError("key material cannot be pickled")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


class KeyStore:
    def __init__(self, path: Path, box: PassphraseBox, lock_fd: int, signing_key: Ed25519PrivateKey,
                 settings: EpochSettings, policy: RotationPolicy, clock: Callable[[], float]) -> None:
        self.path = path
        self.settings = settings
        self.policy = policy
        self._box = box
        self._lock_fd = lock_fd
        self._signing_key = signing_key
        self._clock = clock
        self._mutex = threading.RLock()
        self._epochs: dict[int, KeyEpoch] = {}
        self._current = 0
        self._next_number = 1
        self._spent: set[str] = set()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, passphrase: str, settings: EpochSettings, policy: RotationPolicy = RotationPolicy(),
               clock: Callable[[], float] = time.time) -> KeyStore:
        """A new keystore with a new signing key and a first epoch. Refuses settings that could
        overflow before any key is made, and an existing file."""

        def build(path: Path, lock_fd: int) -> KeyStore:
            if path.exists():
                raise InvalidInput(f"{path} exists; open it, or remove it to start over")
            store = cls(path, PassphraseBox(passphrase), lock_fd, Ed25519PrivateKey.generate(), settings, policy, clock)
            with store._mutex:
                store._start_epoch()
                store._save()
            return store

        return cls._locked(path, settings, policy, build)

    @classmethod
    def open(cls, path: Path, passphrase: str, settings: EpochSettings, policy: RotationPolicy = RotationPolicy(),
             clock: Callable[[], float] = time.time) -> KeyStore:
        """Open an existing keystore (exclusively). If `settings` differ from the current epoch's
        (say the roster grew), a new epoch starts and the old one finishes its rounds."""

        def build(path: Path, lock_fd: int) -> KeyStore:
            box, plaintext = PassphraseBox.open(passphrase, _MAGIC, read_private(path))
            state = json.loads(plaintext)
            signing_key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(state["signing_key"]))
            store = cls(path, box, lock_fd, signing_key, settings, policy, clock)
            with store._mutex:
                store._load(state)
                if EpochSettings.of(store.current.public) != settings:
                    store._replace_current()
                store._purge()
                store._save()
            return store

        return cls._locked(path, settings, policy, build)

    @staticmethod
    def _locked(path: Path, settings: EpochSettings, policy: RotationPolicy,
                build: Callable[[Path, int], KeyStore]) -> KeyStore:
        """Check the settings (before any key exists), take the file's lock, build the store;
        the lock is released if building fails."""
        settings.codec(policy.rotate_every)
        path = Path(path)
        lock_fd = _lock(path)
        try:
            return build(path, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the key-holder publishes ----------------------------------------------------------

    @property
    def signing_public_key(self) -> bytes:
        """The long-term Ed25519 key clients pin (federation.json)."""
        return self._signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def current(self) -> KeyEpoch:
        return self._epochs[self._current]

    def epoch_numbers(self) -> list[int]:
        with self._mutex:
            self._purge()
            return sorted(self._epochs)

    def epoch_for_round(self, round_id: str) -> common_pb2.PublicEpoch:
        """Bind `round_id` to the current epoch (once; idempotent) and return that epoch's signed
        public half, which the round's clients encrypt and seal under."""
        check_identifier(round_id, "round id")
        with self._mutex:
            self._purge()
            if round_id in self._spent:
                raise DuplicateSubmission(f"round {round_id} was already decrypted")
            epoch = self._epoch_serving(round_id)
            if epoch is not None:
                if epoch.rounds[round_id] == DECRYPTED:
                    raise DuplicateSubmission(f"round {round_id} was already decrypted")
                return epoch.public
            if len(self.current.rounds) >= self.policy.rotate_every:
                self._replace_current()
            self.current.rounds[round_id] = OPEN
            self._save()
            return self.current.public

    # -- what a release uses --------------------------------------------------------------------

    def epoch_of_round(self, round_id: str) -> KeyEpoch:
        """The live epoch serving an open `round_id`; refuses a round decrypted before or never
        registered (or whose epoch is gone)."""
        with self._mutex:
            self._purge()
            epoch = self._epoch_serving(round_id)
            if round_id in self._spent or (epoch is not None and epoch.rounds[round_id] == DECRYPTED):
                raise DuplicateSubmission(f"round {round_id} was already decrypted")
            if epoch is None:
                raise PolicyViolation(f"round {round_id} is not registered with a live key epoch")
            return epoch

    def mark_decrypted(self, epoch: KeyEpoch, round_id: str) -> None:
        """Durably record the decryption before it happens: a crash never allows a second one."""
        with self._mutex:
            if self._epochs.get(epoch.number) is not epoch or epoch.rounds.get(round_id) != OPEN:
                raise PolicyViolation(f"round {round_id} is no longer open under key epoch {epoch.number}")
            epoch.rounds[round_id] = DECRYPTED
            self._save()

    def retire(self, epoch: KeyEpoch) -> None:
        """Delete an epoch's keys now (after a refused release); a new epoch becomes current."""
        with self._mutex:
            if self._epochs.get(epoch.number) is not epoch:
                return
            self._delete(epoch)
            if epoch.number == self._current:
                self._start_epoch()
            self._save()

    # -- internals ------------------------------------------------------------------------------

    def _epoch_serving(self, round_id: str) -> KeyEpoch | None:
        return next((e for e in self._epochs.values() if round_id in e.rounds), None)

    def _start_epoch(self) -> None:
        preset = get_preset(self.settings.preset)
        secret = SecretContext.generate(preset)
        sealing_key = X25519PrivateKey.generate()
        public = common_pb2.PublicEpoch(
            epoch=self._next_number, scheme=self.settings.scheme, preset=preset.name, context=secret.public_bytes,
            sealing_public_key=x25519_public_bytes(sealing_key), max_clients=self.settings.max_clients,
            precision_bits=self.settings.precision_bits, value_bound=self.settings.value_bound,
            max_weight=self.settings.max_weight,
        )
        sign_epoch(self._signing_key, public)
        epoch = KeyEpoch(self._next_number, secret, sealing_key, public, secret_bytes=secret.secret_bytes())
        self._epochs[epoch.number] = epoch
        self._current = epoch.number
        self._next_number += 1

    def _replace_current(self) -> None:
        self.current.replaced_at = self._clock()
        self._start_epoch()

    def _delete(self, epoch: KeyEpoch) -> None:
        self._spent.update(r for r, state in epoch.rounds.items() if state == DECRYPTED)
        del self._epochs[epoch.number]

    def _purge(self) -> None:
        """Delete replaced epochs with no open round left or past their grace period."""
        now = self._clock()
        for epoch in list(self._epochs.values()):
            if epoch.replaced_at is None:
                continue
            if OPEN not in epoch.rounds.values() or now - epoch.replaced_at > self.policy.grace_seconds:
                self._delete(epoch)

    def _save(self) -> None:
        state = {
            "signing_key": _b64(_raw_private(self._signing_key)),
            "current": self._current,
            "next_epoch": self._next_number,
            "spent_rounds": sorted(self._spent),
            "epochs": [
                {
                    "number": e.number, "secret": _b64(e.secret_bytes), "sealing_key": _b64(_raw_private(e.sealing_key)),
                    "public": _b64(e.public.SerializeToString()), "rounds": e.rounds, "replaced_at": e.replaced_at,
                }
                for e in self._epochs.values()
            ],
        }
        write_private(self.path, self._box.seal(_MAGIC, json.dumps(state).encode()), replace=True)

    def _load(self, state: dict) -> None:
        for record in state["epochs"]:
            public = common_pb2.PublicEpoch.FromString(base64.b64decode(record["public"]))
            secret_bytes = base64.b64decode(record["secret"])
            secret = SecretContext.from_bytes(secret_bytes, get_preset(public.preset), public.context)
            sealing_key = X25519PrivateKey.from_private_bytes(base64.b64decode(record["sealing_key"]))
            self._epochs[record["number"]] = KeyEpoch(record["number"], secret, sealing_key, public,
                                                      dict(record["rounds"]), record["replaced_at"], secret_bytes)
        self._current = state["current"]
        self._next_number = state["next_epoch"]
        self._spent = set(state["spent_rounds"])

    def __reduce__(self):
        raise TypeError("key material cannot be pickled")

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r}, current epoch {self._current})"


def _lock(path: Path) -> int:
    """An exclusive, non-blocking lock on `<path>.lock`, held until the keystore is closed."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InvalidInput(f"{path} is in use by another key-holder process") from None
    return fd
