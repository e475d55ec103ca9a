"""Rounds of the HE schemes at the core level (no transport): clients protect and sign, the
test plays the aggregator (adding in place, or cheating), the key-holder core releases.
`bench/bfv_round.py` times the same path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from securefl.he.epochs import EpochSettings, EpochVerifier, VerifiedEpoch, protect_update
from securefl.he.keystore import KeyStore, RotationPolicy
from securefl.he.pool import EncryptionPool
from securefl.he.release import KeyHolderCore
from securefl.identity import Identity, Roster, sign_receipt
from securefl.rounds.chunks import ChunkDigest
from securefl.v1 import common_pb2
from tests.submissions import Submission

SPEC = b"s" * 32


class MemoryAudit:
    def __init__(self) -> None:
        self.entries: list[tuple[str | None, str, str]] = []

    def audit(self, round_id: str | None, decision: str, detail: str) -> None:
        self.entries.append((round_id, decision, detail))

    @property
    def decisions(self) -> list[str]:
        return [decision for _, decision, _ in self.entries]


@dataclass
class HeFederation:
    identities: list[Identity]
    keystore: KeyStore
    core: KeyHolderCore
    audit: MemoryAudit
    verifier: EpochVerifier
    epochs: dict[str, VerifiedEpoch] = field(default_factory=dict)

    def epoch(self, round_id: str) -> VerifiedEpoch:
        """What the aggregator relays for a round and each client verifies."""
        if round_id not in self.epochs:
            self.epochs[round_id] = self.verifier.verify(self.core.public_epoch_for_round(round_id))
        return self.epochs[round_id]

    def submit(self, round_id: str, identity: Identity, vector: np.ndarray, weight: float,
               pool: EncryptionPool | None = None) -> Submission:
        protected = protect_update(self.epoch(round_id), round_id, identity.client_id, vector, weight, pool)
        receipt = common_pb2.Receipt(
            round_id=round_id, client_id=identity.client_id, scheme=self.keystore.settings.scheme, spec_hash=SPEC,
            vector_length=protected.vector_length, digest=ChunkDigest.of(protected.chunks),
            key_epoch=protected.key_epoch, sealed_seed=protected.sealed_seed,
        )
        sign_receipt(identity, receipt)
        return Submission(receipt, protected.chunks)

    def submit_all(self, round_id: str, vectors: list[np.ndarray], weights: list[float],
                   pool: EncryptionPool | None = None) -> list[Submission]:
        return [self.submit(round_id, i, v, w, pool) for i, v, w in zip(self.identities, vectors, weights)]

    def add_up(self, round_id: str, chunk_lists: list[list[bytes]]) -> list:
        """The aggregator's work: parse every chunk and add it into the running sum in place."""
        epoch = self.epoch(round_id)
        sums = [epoch.codec.parse_chunk(epoch.context, c) for c in chunk_lists[0]]
        for chunks in chunk_lists[1:]:
            for total, data in zip(sums, chunks):
                total.add_(epoch.codec.parse_chunk(epoch.context, data))
        return sums

    def honest_aggregate(self, round_id: str, submissions: list[Submission]) -> list[bytes]:
        return [total.serialize() for total in self.add_up(round_id, [s.chunks for s in submissions])]

    def release(self, round_id: str, length: int, submissions: list[Submission], chunks: list[bytes]) -> np.ndarray:
        return self.core.release(round_id, length, SPEC, [s.receipt for s in submissions], chunks)


def he_federation(path: Path, scheme: str, preset: str, clients: int = 4, min_clients: int = 2,
                  rotate_every: int = 10, value_bound: float = 4.0, max_weight: float = 10.0,
                  precision_bits: int = 12) -> HeFederation:
    identities = [Identity.generate(f"site-{i}") for i in range(clients)]
    settings = EpochSettings(scheme, preset, clients, value_bound, max_weight, precision_bits)
    keystore = KeyStore.create(path, "test passphrase", settings, RotationPolicy(rotate_every=rotate_every))
    audit = MemoryAudit()
    core = KeyHolderCore(keystore, Roster.of(identities), min_clients, audit)
    return HeFederation(identities, keystore, core, audit, EpochVerifier(keystore.signing_public_key))


def weighted_sum(vectors: list[np.ndarray], weights: list[float], value_bound: float) -> np.ndarray:
    """The exact weighted sum the release approximates (weight sum last)."""
    return sum(np.append(np.clip(v, -value_bound, value_bound) * w, w) for v, w in zip(vectors, weights))
