"""The key-holder's release core: decrypt a round's aggregate only to release the honest sum of
exactly the receipted clients, or nothing. No transport here: the gRPC service (and any other)
calls `KeyHolderCore.release` and maps its errors to statuses.

Before any decryption (a refusal here is audited, changes no key state, and is not a
decryption, so it reveals nothing key-dependent):
* receipts: each signed by an enrolled client (the roster is the key-holder's own), distinct
  clients, at least min_clients and at most the epoch's max_clients, all for this round, the
  epoch's scheme, this model spec and length, and the key epoch the round is registered to;
* the round is registered to a live epoch and was never decrypted (`KeyStore`);
* the aggregate is exactly the ciphertexts that length needs, each a fresh ciphertext of the
  epoch's parameters (one ciphertext, two polynomials, the data level);
* every receipt's sealed seed opens for this round, client and epoch.

Then the round is marked decrypted (durably), the aggregate decrypted, the receipted clients'
masks removed and every field range-checked (`bfv.py`, `ckks.py`: why a ciphertext other than
the honest sum of those clients' ciphertexts fails these checks). If all pass, the sum is
released (CKKS: flooded). Otherwise nothing is released, the refusal is audited with the
receipts involved, and the key epoch is retired at once, so an adversary meets at most one
refusal per key. The caller sees one uniform PolicyViolation whatever check failed.

Releases are serialised: two concurrent rounds under one epoch cannot both be decrypted after
a refusal that retires it."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import InvalidInput, PayloadTooLarge, PolicyViolation, SecureFLError
from ..identity import Roster, check_identifier, verify_receipt
from ..v1 import common_pb2
from .codec import decrypt_chunks
from .keystore import KeyEpoch, KeyStore
from .masks import open_seed
from .packing import ReleaseCheckFailed

log = logging.getLogger(__name__)

MAX_VECTOR_LENGTH = 1 << 28  # 268M values: larger models are refused before any work


class AuditLog(Protocol):
    def audit(self, round_id: str | None, decision: str, detail: str) -> None: ...


def receipts_summary(receipts: Sequence[common_pb2.Receipt]) -> str:
    """Who the receipts name, and a short hash of each signature, for the audit log."""
    return ", ".join(f"{r.client_id}#{hashlib.sha256(r.signature).hexdigest()[:12]}" for r in receipts)


class KeyHolderCore:
    def __init__(self, keystore: KeyStore, roster: Roster, min_clients: int, audit: AuditLog) -> None:
        if min_clients < 1:
            raise InvalidInput("min_clients must be at least 1")
        self.keystore = keystore
        self._roster = roster
        self._min_clients = min_clients
        self._audit = audit
        self._lock = threading.Lock()

    def public_epoch_for_round(self, round_id: str) -> common_pb2.PublicEpoch:
        """The signed epoch a round's clients encrypt under (registers the round)."""
        return self.keystore.epoch_for_round(round_id)

    def release(self, round_id: str, vector_length: int, spec_hash: bytes,
                receipts: Sequence[common_pb2.Receipt], chunks: Sequence[bytes]) -> np.ndarray:
        """The weighted sum (weight sum last) of exactly the receipted clients' updates, or a
        SecureFLError; see the module docstring for the order of checks."""
        check_identifier(round_id, "round id")
        with self._lock:
            try:
                epoch = self.keystore.epoch_of_round(round_id)
                codec = epoch.codec(self.keystore.policy.rotate_every)
                self._check_receipts(epoch, round_id, vector_length, spec_hash, receipts)
                parsed = self._parse(epoch, codec, vector_length, chunks)
                seeds = [open_seed(r.sealed_seed, epoch.sealing_key, round_id, r.client_id, epoch.number)
                         for r in receipts]
                self.keystore.mark_decrypted(epoch, round_id)
            except SecureFLError as refusal:
                self._audit.audit(round_id, "refused", f"{type(refusal).__name__}: {refusal}")
                log.warning("refused to decrypt round %s: %s", round_id, refusal)
                raise
            try:
                total = codec.reveal(decrypt_chunks(epoch.secret.context, parsed), seeds, vector_length)
            except ReleaseCheckFailed as failure:
                self.keystore.retire(epoch)
                self._audit.audit(round_id, "refused after decryption",
                                  f"{failure}; key epoch {epoch.number} retired; receipts: {receipts_summary(receipts)}")
                log.warning("round %s: decrypted aggregate failed its checks; key epoch %d retired", round_id, epoch.number)
                raise PolicyViolation(
                    f"round {round_id}: the aggregate is not the honest sum of the receipted clients' updates; "
                    f"nothing was released and key epoch {epoch.number} is retired"
                ) from None
            self._audit.audit(round_id, "released", f"key epoch {epoch.number}; receipts: {receipts_summary(receipts)}")
            return total

    def _check_receipts(self, epoch: KeyEpoch, round_id: str, vector_length: int, spec_hash: bytes,
                        receipts: Sequence[common_pb2.Receipt]) -> None:
        if not 2 <= vector_length <= MAX_VECTOR_LENGTH:
            raise PayloadTooLarge(f"vector length {vector_length} is outside [2, {MAX_VECTOR_LENGTH}]")
        expected = (round_id, epoch.public.scheme, spec_hash, vector_length, epoch.number)
        clients: set[str] = set()
        for receipt in receipts:
            try:
                verify_receipt(self._roster, receipt)
            except SecureFLError as exc:
                raise PolicyViolation(f"receipt of {receipt.client_id!r:.70} is not valid: {exc}") from None
            if (receipt.round_id, receipt.scheme, receipt.spec_hash, receipt.vector_length, receipt.key_epoch) != expected:
                raise PolicyViolation(
                    f"receipt of {receipt.client_id!r} is for another round, scheme, model, length or key epoch"
                )
            clients.add(receipt.client_id)
        if len(clients) != len(receipts):
            raise PolicyViolation("receipts name the same client more than once")
        if not self._min_clients <= len(clients) <= epoch.public.max_clients:
            raise PolicyViolation(
                f"{len(clients)} distinct contributors; policy requires between {self._min_clients} and "
                f"{epoch.public.max_clients}"
            )

    @staticmethod
    def _parse(epoch: KeyEpoch, codec, vector_length: int, chunks: Sequence[bytes]) -> list:
        expected = codec.chunk_count(vector_length)
        if len(chunks) != expected:
            raise InvalidInput(f"{len(chunks)} ciphertexts; length {vector_length} needs {expected}")
        return [codec.parse_chunk(epoch.secret.context, data) for data in chunks]
