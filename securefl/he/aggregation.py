"""The `ckks` scheme's two halves.

Client half: scale the update by its weight, append the weight, refuse values that could make
the sum of all enrolled clients overflow (CKKS wraps silently), and encrypt under the public
context of the pinned key-holder. Server half: validate ciphertext chunks, add them into the
running sum in place, and have the key-holder decrypt the final sum. The aggregator holds only
the public context; `load_public_context` refuses a context with a secret key."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Protocol

import numpy as np
import tenseal as ts

from ..errors import InvalidInput, VerificationFailed
from ..rounds.accumulate import ChunkedSum, ChunkOps
from ..rounds.chunks import chunk_count
from ..rounds.scheme import Protected, RoundConfig, SingleStageRound, Stage
from ..v1 import aggregator_pb2, common_pb2, keyholder_pb2
from .codec import encrypt_chunks, parse_chunk
from .keys import fingerprint, load_public_context
from .pool import INLINE_MAX_CHUNKS, shared_pool
from .presets import get_preset

CKKS = "ckks"


class Decryptor(Protocol):
    """The aggregator's view of the key-holder, over whatever transport connects them."""

    def public_context(self) -> keyholder_pb2.PublicContext: ...

    def decrypt(self, round_id: str, vector_length: int, spec_hash: bytes,
                receipts: list[common_pb2.Receipt], chunks: list[bytes]) -> np.ndarray: ...


class CkksRound(SingleStageRound):
    def __init__(self, round_id: str, keyholder: Decryptor) -> None:
        self._round_id = round_id
        self._keyholder = keyholder

    def reveal(self, accumulator: ChunkedSum, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        """Serialization is deterministic, so after a restart the key-holder receives the same
        bytes as before from the checkpointed sum, and answers the repeated request."""
        return self._keyholder.decrypt(self._round_id, vector_length, spec_hash, receipts, accumulator.snapshot())


class CkksServer:
    name = CKKS
    result_dtype = np.dtype(np.float32)  # decryption is accurate to ~1e-6: float32 carries all of it

    def __init__(self, keyholder: Decryptor) -> None:
        public = keyholder.public_context()
        if not hmac.compare_digest(fingerprint(public.context), public.fingerprint):
            raise VerificationFailed("the key-holder's public context does not match its fingerprint")
        self.public_context = public.context
        self.context = load_public_context(public.context)
        self.preset = get_preset(public.preset)
        self.chunk_values = self.preset.slots
        self.chunk_bytes = self.preset.ciphertext_bytes
        self._keyholder = keyholder
        self._ops = ChunkOps(own=lambda chunk: chunk,  # the first submission's ciphertexts become the sum's
                             add=lambda total, chunk: total.add_(chunk),  # in place: a copy costs ~300 adds
                             serialize=lambda chunk: chunk.serialize(),
                             parse=lambda data: ts.ckks_vector_from(self.context, data))

    def describe(self, session: aggregator_pb2.Session) -> None:
        session.he_context = self.public_context
        session.he_fingerprint = fingerprint(self.public_context)
        session.he_preset = self.preset.name
        session.max_abs_sum = self.preset.max_abs_sum

    def new_round(self, round_id: str, config: RoundConfig, opened_at: float,
                  clock: Callable[[], float]) -> CkksRound:
        return CkksRound(round_id, self._keyholder)

    def new_accumulator(self) -> ChunkedSum:
        return ChunkedSum(self._ops)

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> ts.CKKSVector:
        return parse_chunk(self.context, self.preset, data, expected_values)


class CkksClientRound:
    def __init__(self, client: CkksClient, payload: np.ndarray) -> None:
        self._client = client
        self._payload = payload

    def answer(self, stage: Stage) -> bytes:
        raise InvalidInput(f"the ckks scheme has no stage {stage.name!r:.40}")

    def protect(self, stage: Stage) -> Protected:
        return Protected(self._client.encrypt(self._payload), self._payload.size)


class CkksClient:
    name = CKKS
    interactive = False

    def __init__(self, session: aggregator_pb2.Session, keyholder_fingerprint: bytes | None) -> None:
        """Refuses a session whose public context is not the pinned key-holder's: a malicious
        aggregator cannot substitute its own key."""
        if keyholder_fingerprint is None:
            raise VerificationFailed("the ckks scheme needs the key-holder's fingerprint pinned")
        if not hmac.compare_digest(fingerprint(session.he_context), keyholder_fingerprint):
            raise VerificationFailed("the key-holder context relayed by the aggregator does not match the pinned fingerprint")
        self._public_context = session.he_context
        self._context = load_public_context(session.he_context)
        self._slots = get_preset(session.he_preset).slots
        self._bound = session.max_abs_sum / max(1, session.max_clients)
        self._max_clients = session.max_clients

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> CkksClientRound:
        payload = np.append(vector * weight, weight)
        largest = float(np.abs(payload).max())
        if largest > self._bound:
            raise InvalidInput(
                f"weighted update reaches {largest:.3g}, above {self._bound:.3g} (= the scheme's range / "
                f"{self._max_clients} enrolled clients); use a smaller weight (e.g. a fraction of samples) or clip the update"
            )
        return CkksClientRound(self, payload)

    def encrypt(self, payload: np.ndarray) -> list[bytes]:
        if chunk_count(payload.size, self._slots) <= INLINE_MAX_CHUNKS:
            return encrypt_chunks(self._context, payload, self._slots)
        return shared_pool(self._public_context).encrypt(payload, self._slots)
