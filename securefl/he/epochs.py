"""Key epochs as clients see them: the key-holder's signed `PublicEpoch`, its verification
against the pinned Ed25519 key, the codec its parameters define, and the client's protection
of an update under it (`protect_update`).

An epoch's parameters (scheme, preset, public context, sealing key, max_clients, precision,
value bound, max weight) are decided and signed by the key-holder, never by the aggregator
that relays them: the key-holder's range checks and the clients' packing use the same
numbers, and a relayed epoch that was altered, or signed by anyone but the pinned key, is
refused. `EpochVerifier` also refuses an epoch older than the newest it has verified (a
malicious aggregator replaying a retired epoch) and two different epochs under one number."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
from dataclasses import dataclass

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import InvalidInput, VerificationFailed
from ..federation import Federation
from ..identity import length_prefixed, signature_valid
from ..prg import SEED_BYTES
from ..v1 import common_pb2
from .bfv import BfvCodec
from .ckks import CkksCodec
from .keys import load_public_context
from .masked import MaskedCodec
from .masks import seal_seed
from .packing import DEFAULT_PRECISION_BITS, PackingPlan
from .pool import EncryptionPool, Encryptor
from .presets import DEFAULT_PRESETS, BfvPreset, CkksPreset, get_preset

_EPOCH_TAG = b"securefl/public-epoch/v1"


@dataclass(frozen=True)
class EpochSettings:
    """The key-holder's choice for new epochs. `max_clients` is the number of enrolled clients:
    sums of all of them must never overflow. Precision is relative to value_bound·max_weight,
    so both should be as tight as the federation allows."""

    scheme: str
    preset: str
    max_clients: int
    value_bound: float
    max_weight: float
    precision_bits: int = DEFAULT_PRECISION_BITS

    def codec(self, decryptions_per_key: int = 1) -> MaskedCodec:
        """The codec these settings define; InvalidInput for any configuration that could
        overflow, before any key is made or anything encrypted."""
        preset = get_preset(self.preset)
        if preset.scheme != self.scheme:
            raise InvalidInput(f"preset {self.preset} is a {preset.scheme} preset, not {self.scheme}")
        if isinstance(preset, BfvPreset):
            if not 1 <= self.max_clients <= preset.max_clients:
                raise InvalidInput(
                    f"preset {preset.name} sums at most {preset.max_clients} clients within its noise budget, "
                    f"not {self.max_clients}"
                )
            plan = PackingPlan.choose(self.max_clients, self.precision_bits, self.value_bound, self.max_weight,
                                      preset.packing_bits, preset.slots)
            return BfvCodec(preset, plan)
        assert isinstance(preset, CkksPreset)
        return CkksCodec(preset, self.max_clients, self.value_bound, self.max_weight, decryptions_per_key)

    @classmethod
    def for_federation(cls, federation: Federation, scheme: str, preset: str | None = None,
                       precision_bits: int | None = None) -> EpochSettings:
        """The settings a key-holder of `federation` uses: every enrolled site may contribute,
        values and weights are bounded as the federation pins them, and precision comes from the
        option, else the federation's `security.precision_bits`, else the default."""
        if scheme not in DEFAULT_PRESETS:
            raise InvalidInput(f"the key-holder serves the HE schemes {' or '.join(DEFAULT_PRESETS)}, not {scheme!r:.20}")
        security = federation.security
        precision = precision_bits or security.precision_bits or DEFAULT_PRECISION_BITS
        return cls(scheme, preset or DEFAULT_PRESETS[scheme], len(federation.roster), security.value_bound,
                   security.max_weight, precision)

    @classmethod
    def of(cls, epoch: common_pb2.PublicEpoch) -> EpochSettings:
        return cls(epoch.scheme, epoch.preset, epoch.max_clients, epoch.value_bound, epoch.max_weight,
                   epoch.precision_bits)


def epoch_message(epoch: common_pb2.PublicEpoch) -> bytes:
    """Canonical encoding of fields 1-9 (the context by its SHA-256)."""
    return _EPOCH_TAG + length_prefixed(
        struct.pack(">Q", epoch.epoch), epoch.scheme.encode(), epoch.preset.encode(),
        hashlib.sha256(epoch.context).digest(), epoch.sealing_public_key,
        struct.pack(">II", epoch.max_clients, epoch.precision_bits),
        struct.pack(">dd", epoch.value_bound, epoch.max_weight),
    )


def sign_epoch(signing_key: Ed25519PrivateKey, epoch: common_pb2.PublicEpoch) -> None:
    epoch.signature = signing_key.sign(epoch_message(epoch))


@dataclass(frozen=True)
class VerifiedEpoch:
    """A PublicEpoch whose signature verified: what a client encrypts and seals under."""

    number: int
    message: common_pb2.PublicEpoch
    context: ts.Context
    codec: MaskedCodec

    @property
    def sealing_public_key(self) -> bytes:
        return self.message.sealing_public_key

    @property
    def public_context(self) -> bytes:
        return self.message.context

    def encryptor(self, pool: EncryptionPool | None = None) -> Encryptor:
        return Encryptor(self.context, self.public_context, pool)


def verify_signature(keyholder_public_key: bytes, epoch: common_pb2.PublicEpoch) -> None:
    """VerificationFailed unless the epoch carries the key-holder's signature."""
    if not signature_valid(keyholder_public_key, epoch.signature, epoch_message(epoch)):
        raise VerificationFailed("the key-holder epoch does not carry the pinned key-holder's signature")


class EpochVerifier:
    """A client's view of the key-holder: its pinned Ed25519 public key and the newest epoch
    it has accepted. Thread-safe; one per client identity."""

    def __init__(self, keyholder_public_key: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(keyholder_public_key)
        except ValueError:
            raise InvalidInput("the pinned key-holder key is not a 32-byte Ed25519 public key") from None
        self._key = keyholder_public_key
        self._newest: VerifiedEpoch | None = None
        self._lock = threading.Lock()

    def verify(self, epoch: common_pb2.PublicEpoch) -> VerifiedEpoch:
        verify_signature(self._key, epoch)
        with self._lock:
            newest = self._newest
            if newest is not None and epoch.epoch < newest.number:
                raise VerificationFailed(f"key epoch {epoch.epoch} is older than epoch {newest.number} already in use")
            if newest is not None and epoch.epoch == newest.number:
                if not hmac.compare_digest(epoch_message(epoch), epoch_message(newest.message)):
                    raise VerificationFailed(f"two different key epochs carry the number {epoch.epoch}")
                return newest
        context = load_public_context(epoch.context)
        verified = VerifiedEpoch(epoch.epoch, epoch, context, EpochSettings.of(epoch).codec())
        with self._lock:
            if self._newest is None or verified.number > self._newest.number:
                self._newest = verified
        return verified


@dataclass(frozen=True)
class ProtectedUpdate:
    """What a client submits: the ciphertexts, and what its signed receipt must carry."""

    chunks: list[bytes]
    vector_length: int  # values including the trailing weight
    key_epoch: int
    sealed_seed: bytes


def protect_update(epoch: VerifiedEpoch, round_id: str, client_id: str, vector: np.ndarray, weight: float,
                   pool: EncryptionPool | None = None) -> ProtectedUpdate:
    """Mask (fresh seed for this round) and encrypt `(vector·weight, weight)` under `epoch`, and
    seal the seed to the key-holder for this round, client and epoch."""
    seed = os.urandom(SEED_BYTES)
    chunks = epoch.codec.protect(epoch.encryptor(pool), vector, weight, seed)
    sealed = seal_seed(seed, epoch.sealing_public_key, round_id, client_id, epoch.number)
    return ProtectedUpdate(chunks, int(np.asarray(vector).size) + 1, epoch.number, sealed)
