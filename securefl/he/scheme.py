"""The two halves of the HE schemes, `bfv` and `ckks`: one client half and one server half for
either, parameterised by the key-holder's signed key epochs (`epochs.py`).

Client half. Before the client joins a round, its update is checked against the parameters of
the session's epoch (relayed by the aggregator, verified against the key-holder key pinned in
federation.json), so an update the round would refuse leaves no round behind. The round's submit
stage carries the round's own epoch; the client verifies it (signed by the pinned key-holder
key, of the scheme the aggregator announced, never older than an epoch it has already used:
`EpochVerifier`) and protects the update under it (`epochs.protect_update`: fresh mask seed
sealed to the key-holder, pack or encode, mask, encrypt on the shared worker pool). The receipt
it signs carries the key epoch and the sealed seed.

Server half. The aggregator reads the key-holder's current epoch at start: its parameters fix
the chunk layout (`chunk_values`) and the context chunks are parsed with. Each round is
registered with the key-holder on its first stage request (or submission), which binds it to
the key-holder's current epoch; the aggregator checks that epoch's signature and parameters,
hands it to the round's clients as their submit stage, refuses receipts of another epoch or
without a sealed seed, adds ciphertexts in place (`add_`: a copy costs ~300 adds), and at the
close asks the key-holder to release the sum of exactly the receipted submissions
(`release.py`), which it does only for the honest sum. The aggregator never holds a secret key:
the epochs it relays carry public contexts only (`load_public_context` refuses a secret one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ..errors import InvalidInput, SpecMismatch, VerificationFailed
from ..identity import Identity
from ..rounds.accumulate import ChunkedSum, ChunkOps
from ..rounds.scheme import SUBMIT, Protected, RoundConfig, SingleStageRound, Stage, decode
from ..v1 import aggregator_pb2, common_pb2
from .epochs import EpochSettings, EpochVerifier, protect_update, verify_signature
from .keys import load_public_context
from .masks import SEALED_SEED_BYTES
from .pool import shared_pool

BFV, CKKS = "bfv", "ckks"


class KeyHolderLink(Protocol):
    """The aggregator's view of the key-holder, over whatever transport connects them (the gRPC
    `KeyHolderClient`, or `release.KeyHolderCore` itself in one process)."""

    def current_epoch(self) -> common_pb2.PublicEpoch: ...

    def public_epoch_for_round(self, round_id: str) -> common_pb2.PublicEpoch: ...

    def release(self, round_id: str, vector_length: int, spec_hash: bytes, receipts: Sequence[common_pb2.Receipt],
                chunks: Sequence[bytes]) -> np.ndarray: ...


# -- server half -------------------------------------------------------------------------------


class HeRound(SingleStageRound):
    def __init__(self, round_id: str, server: HeServer) -> None:
        self._round_id = round_id
        self._server = server
        self._epoch: common_pb2.PublicEpoch | None = None
        self._stage: Stage | None = None

    def epoch(self) -> common_pb2.PublicEpoch:
        """The round's key epoch, registered with the key-holder on first use."""
        if self._epoch is None:
            self._epoch = self._server.register(self._round_id)
            self._stage = Stage(SUBMIT, self._epoch.SerializeToString())
        return self._epoch

    def stage_for(self, client_id: str, submitted: bool) -> Stage | None:
        if submitted:
            return None
        self.epoch()
        return self._stage

    def admit(self, receipt: common_pb2.Receipt) -> None:
        number = self.epoch().epoch
        if receipt.key_epoch != number:
            raise SpecMismatch(f"the receipt is for key epoch {receipt.key_epoch}; round {self._round_id} runs under "
                               f"key epoch {number} (its submit stage says so)")
        if len(receipt.sealed_seed) != SEALED_SEED_BYTES:
            raise InvalidInput(f"the receipt carries no sealed mask seed of {SEALED_SEED_BYTES} bytes")

    def reveal(self, accumulator: ChunkedSum, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        """Serialization is deterministic, so after an aggregator restart the key-holder gets
        the same bytes again from the checkpointed sum, and answers the identical request."""
        return self._server.keyholder.release(self._round_id, vector_length, spec_hash, receipts,
                                              accumulator.snapshot())


class HeServer:

    def __init__(self, name: str, keyholder: KeyHolderLink, keyholder_key: bytes) -> None:
        """`keyholder_key`: the key-holder's Ed25519 key pinned in federation.json."""
        current = keyholder.current_epoch()
        verify_signature(keyholder_key, current)
        if current.scheme != name:
            raise InvalidInput(f"the key-holder serves {current.scheme!r:.20} epochs, not {name}: start both with the "
                               "same --scheme")
        self.name = name
        self.keyholder = keyholder
        self._key = keyholder_key
        self._current = current
        self.settings = EpochSettings.of(current)
        self.codec = self.settings.codec()
        self.chunk_values = self.codec.chunk_values
        self.chunk_bytes = self.codec.preset.ciphertext_bytes
        self.result_dtype = self.codec.result_dtype
        self.context = load_public_context(current.context)
        self._ops = ChunkOps(own=lambda chunk: chunk,  # the first submission's ciphertexts become the sum's
                             add=lambda total, chunk: total.add_(chunk),  # in place: a copy costs ~300 adds
                             serialize=lambda chunk: chunk.serialize(),
                             parse=lambda data: self.codec.parse_chunk(self.context, data))

    def register(self, round_id: str) -> common_pb2.PublicEpoch:
        """Bind `round_id` to the key-holder's current epoch; refuse an epoch this aggregator
        cannot serve (other parameters than at its start: restart it)."""
        epoch = self.keyholder.public_epoch_for_round(round_id)
        verify_signature(self._key, epoch)
        if EpochSettings.of(epoch) != self.settings:
            raise SpecMismatch(f"round {round_id} got key epoch {epoch.epoch}, whose parameters differ from those this "
                               "aggregator started with (the key-holder's settings changed): restart the aggregator")
        return epoch

    def describe(self, session: aggregator_pb2.Session) -> None:
        session.he_epoch.CopyFrom(self._current)

    def new_round(self, round_id: str, config: RoundConfig, opened_at: float,
                  clock: Callable[[], float]) -> HeRound:
        return HeRound(round_id, self)

    def new_accumulator(self) -> ChunkedSum:
        return ChunkedSum(self._ops)

    def parse_chunk(self, index: int, data: bytes, expected_values: int):
        """Every chunk is a whole, fresh ciphertext of the round's parameters (padding included)."""
        return self.codec.parse_chunk(self.context, data)


# -- client half -------------------------------------------------------------------------------


class HeClientRound:
    def __init__(self, client: HeClient, round_id: str, vector: np.ndarray, weight: float) -> None:
        self._client = client
        self._round_id = round_id
        self._vector = vector
        self._weight = weight

    def answer(self, stage: Stage) -> bytes:
        raise InvalidInput(f"the {self._client.name} scheme has no stage {stage.name!r:.40}")

    def protect(self, stage: Stage) -> Protected:
        return self._client.protect(self._round_id, stage, self._vector, self._weight)

    def export(self) -> bytes:
        """Nothing to keep: the round's one stage is its submission (transports that keep a
        round between stages, `rounds.scheme.ResumableScheme`)."""
        return b""


class HeClient:
    interactive = True  # the submit stage carries the round's key epoch

    def __init__(self, name: str, session: aggregator_pb2.Session, identity: Identity, verifier: EpochVerifier) -> None:
        """`verifier` holds the key-holder key pinned in federation.json: an epoch the aggregator
        relays counts only with the key-holder's signature."""
        if not session.HasField("he_epoch"):
            raise VerificationFailed(f"the aggregator relays no key-holder epoch for the {name} scheme")
        self.name = name
        self._identity = identity
        self._verifier = verifier
        self._session_epoch = self._verified(session.he_epoch)

    def _verified(self, message: common_pb2.PublicEpoch):
        epoch = self._verifier.verify(message)
        if epoch.message.scheme != self.name:
            raise VerificationFailed(f"the key-holder epoch relayed is for {epoch.message.scheme!r:.20}, not {self.name}")
        return epoch

    def check(self, vector: np.ndarray, weight: float) -> None:
        self._session_epoch.codec.check(vector, weight)

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> HeClientRound:
        return HeClientRound(self, round_id, vector, weight)

    def begin(self, round_id: str) -> HeClientRound:
        """A round starts at its submit stage, with the update: there is no stage before it."""
        raise InvalidInput(f"the {self.name} scheme's only stage is submit, which carries the update")

    def resume(self, round_id: str, exported: bytes) -> HeClientRound:
        """A round ends with its submission: no stage follows it to resume for."""
        raise InvalidInput(f"the {self.name} scheme has no stage after its submission in round {round_id:.64}")

    def protect(self, round_id: str, stage: Stage, vector: np.ndarray, weight: float) -> Protected:
        epoch = self._verified(decode(common_pb2.PublicEpoch, stage.body, f"round {round_id}'s key epoch"))
        update = protect_update(epoch, round_id, self._identity.client_id, vector, weight, shared_pool())
        return Protected(update.chunks, update.vector_length,
                         common_pb2.Receipt(key_epoch=update.key_epoch, sealed_seed=update.sealed_seed))
