"""The key-holder's release core: decrypt a round's aggregate only to release the honest sum of
exactly the receipted clients, or nothing. No transport here: the gRPC service (and any other)
calls `KeyHolderCore.release` and maps its errors to statuses, and passes who asked, for the
audit log.

Before any decryption (a refusal here is audited, changes no key state, and is not a
decryption, so it reveals nothing key-dependent):
* receipts: each signed by an enrolled client (the roster is the key-holder's own), distinct
  clients, at least min_clients and at most the epoch's max_clients, all for this round, the
  epoch's scheme, this model spec and length, and the key epoch the round is registered to;
* the round is registered to a live epoch and was never decrypted (`KeyStore`) — or was
  decrypted from exactly this request: an aggregator that lost the answer (a crash before it
  stored the result) repeats it and gets the same release again (`request_digest`; CKKS
  flooding is expanded from the key and the request, never drawn afresh), so nothing new comes
  out; any other request for a decrypted round is refused;
* the aggregate is exactly the ciphertexts that length needs, each a fresh ciphertext of the
  epoch's parameters (one ciphertext, two polynomials, the data level);
* every receipt's sealed seed opens for this round, client and epoch.

Then the round is marked decrypted (durably, with the request's digest), the aggregate decrypted
(in this process, or on the key-holder's own decryption workers: `pool.Decryptor`), the receipted clients'
masks removed and every field range-checked (`bfv.py`, `ckks.py`: why a ciphertext other than
the honest sum of those clients' ciphertexts fails these checks). If all pass, the sum is
released (CKKS: flooded). Otherwise nothing is released, the refusal is audited with the
receipts involved, and the key epoch is retired at once, so an adversary meets at most one
refusal per key. The caller sees one uniform PolicyViolation whatever check failed.

Releases are serialised: two concurrent rounds under one epoch cannot both be decrypted after
a refusal that retires it."""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from ..errors import DuplicateSubmission, InvalidInput, PayloadTooLarge, PolicyViolation, SecureFLError
from ..identity import Roster, check_identifier, length_prefixed, verify_receipt
from ..rounds.chunks import SHA256, ChunkDigest
from ..rounds.scheme import MAX_VECTOR_LENGTH
from ..telemetry import NO_RELEASE_METRICS, ReleaseMetrics
from ..v1 import common_pb2
from .codec import HEVector
from .keystore import KeyEpoch, KeyStore
from .masks import open_seed
from .packing import ReleaseCheckFailed
from .pool import Decryptor

log = logging.getLogger(__name__)

_REQUEST_TAG = b"securefl/keyholder/request/v1"


class AuditLog(Protocol):
    def audit(self, round_id: str | None, decision: str, detail: str, requester: str = "") -> None: ...


def request_digest(round_id: str, vector_length: int, spec_hash: bytes, receipts: Sequence[common_pb2.Receipt],
                   chunks: ChunkDigest) -> bytes:
    """What makes two decryption requests the same: the round, length, model spec, every receipt
    (in order, deterministically serialized) and every ciphertext byte."""
    return hashlib.sha256(_REQUEST_TAG + length_prefixed(
        round_id.encode(), struct.pack(">Q", vector_length), spec_hash,
        *(r.SerializeToString(deterministic=True) for r in receipts), chunks.digest())).digest()


def receipts_summary(receipts: Sequence[common_pb2.Receipt]) -> str:
    """Who the receipts name, and a short hash of each signature, for the audit log."""
    return ", ".join(f"{r.client_id}#{hashlib.sha256(r.signature).hexdigest()[:12]}" for r in receipts)


class KeyHolderCore:
    def __init__(self, keystore: KeyStore, roster: Roster, min_clients: int, audit: AuditLog,
                 metrics: ReleaseMetrics = NO_RELEASE_METRICS, decryptor: Decryptor = Decryptor()) -> None:
        """`decryptor` decrypts in this process, or on the key-holder's decryption workers."""
        if min_clients < 1:
            raise InvalidInput("min_clients must be at least 1")
        self.keystore = keystore
        self._roster = roster
        self._min_clients = min_clients
        self._audit = audit
        self._metrics = metrics
        self._decryptor = decryptor
        self._lock = threading.Lock()

    def current_epoch(self) -> common_pb2.PublicEpoch:
        """The signed public half of the current epoch (registers nothing)."""
        return self.keystore.current.public

    def public_epoch_for_round(self, round_id: str) -> common_pb2.PublicEpoch:
        """The signed epoch a round's clients encrypt under (registers the round)."""
        return self.keystore.epoch_for_round(round_id)

    def release(self, round_id: str, vector_length: int, spec_hash: bytes,
                receipts: Sequence[common_pb2.Receipt], chunks: Iterable[bytes], requester: str = "") -> np.ndarray:
        """The weighted sum (weight sum last) of exactly the receipted clients' updates, or a
        SecureFLError; see the module docstring for the order of checks. `chunks` may be a
        stream: at most the ciphertexts the length needs are read (each validated as it comes),
        and a stream that raises is a refusal like any other. `requester` names the caller in
        the audit log."""
        try:
            check_identifier(round_id, "round id")
        except SecureFLError as refusal:
            self._refused(None, refusal, requester)
            raise
        with self._lock:
            try:
                earlier = self.keystore.decrypted_from(round_id)
                epoch = earlier[0] if earlier is not None else self.keystore.epoch_of_round(round_id)
                codec = epoch.codec(self.keystore.policy.rotate_every)
                self._check_receipts(epoch, round_id, vector_length, spec_hash, receipts)
                digest = ChunkDigest(SHA256)  # the request's identity, kept in the key store: not the receipts'
                raw, parsed = self._parse(epoch, codec, vector_length, chunks, digest,
                                          keep_raw=self._decryptor.uses_workers(codec.chunk_count(vector_length)))
                seeds = [open_seed(r.sealed_seed, epoch.sealing_key, round_id, r.client_id, epoch.number)
                         for r in receipts]
                request = request_digest(round_id, vector_length, spec_hash, receipts, digest)
                if earlier is None:
                    self.keystore.mark_decrypted(epoch, round_id, request)
                elif not hmac.compare_digest(earlier[1], request):
                    raise DuplicateSubmission(f"round {round_id} was already decrypted from another aggregate or "
                                              "receipts")
            except SecureFLError as refusal:
                self._refused(round_id, refusal, requester)
                log.warning("refused to decrypt round %s for %s: %s", round_id, requester or "a caller", refusal)
                raise
            try:
                decrypted = self._decryptor.decrypt(epoch.secret, epoch.public.scheme, raw, parsed)
                total = codec.reveal(decrypted, seeds, vector_length, epoch.release_seed(request))
            except ReleaseCheckFailed as failure:
                self.keystore.retire(epoch)
                self._audit.audit(round_id, "refused after decryption",
                                  f"{failure}; key epoch {epoch.number} retired; receipts: {receipts_summary(receipts)}",
                                  requester)
                self._metrics.decryption(False, "ReleaseCheckFailed")
                log.warning("round %s: decrypted aggregate failed its checks; key epoch %d retired", round_id, epoch.number)
                raise PolicyViolation(
                    f"round {round_id}: the aggregate is not the honest sum of the receipted clients' updates; "
                    f"nothing was released and key epoch {epoch.number} is retired"
                ) from None
            self._audit.audit(round_id, "released" if earlier is None else "released again (the identical request)",
                              f"key epoch {epoch.number}; receipts: {receipts_summary(receipts)}", requester)
            self._metrics.decryption(True)
            return total

    def _refused(self, round_id: str | None, refusal: SecureFLError, requester: str) -> None:
        self._audit.audit(round_id, "refused", f"{type(refusal).__name__}: {refusal}", requester)
        self._metrics.decryption(False, type(refusal).__name__)

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
    def _parse(epoch: KeyEpoch, codec, vector_length: int, chunks: Iterable[bytes], digest: ChunkDigest,
               keep_raw: bool) -> tuple[list[bytes], list[HEVector]]:
        """Parse exactly the ciphertexts `vector_length` needs, reading no more than one extra;
        the validated ciphertexts as received (with `keep_raw`; else none) and as parsed."""
        expected = codec.chunk_count(vector_length)
        raw, parsed = [], []
        for data in chunks:
            if len(parsed) == expected:
                raise InvalidInput(f"more than the {expected} ciphertexts length {vector_length} needs")
            parsed.append(codec.parse_chunk(epoch.secret.context, data))
            if keep_raw:
                raw.append(data)
            digest.update(len(parsed) - 1, data)
        if len(parsed) != expected:
            raise InvalidInput(f"{len(parsed)} ciphertexts; length {vector_length} needs {expected}")
        return raw, parsed
