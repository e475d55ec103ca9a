"""The two halves of a protection scheme, as the round engine and the client drivers see them.

A scheme's **client half** protects one update and answers the scheme's stages; its **server
half** validates and adds protected chunks and reveals the sum. Drivers (the gRPC client, the
Flower mod, the aggregator service, the Flower strategy) only call these interfaces and never
branch on a scheme's name.

Stages are how multi-round-trip schemes (SecAgg+) talk: the server half says what a client
must do next as a `Stage` (a name and a scheme-defined protobuf body, as bytes), the client half
answers it. `SUBMIT` is the stage in which the client sends its protected update (through the
transport's streaming path); its body may carry what the client needs to protect its update
(the HE schemes' round key epoch, SecAgg+'s incoming shares). A scheme whose client submits at
once, without asking for a stage, is not `interactive` (plain)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import InvalidInput
from ..identity import Identity, sign_receipt
from ..v1 import aggregator_pb2, common_pb2
from .chunks import RECEIPT_DIGEST, ChunkDigest

M = TypeVar("M")

SUBMIT = "submit"
DONE = "done"  # the stage a client gets once its round has ended
MAX_VECTOR_LENGTH = 1 << 28  # larger models are refused before any work


@dataclass(frozen=True)
class RoundConfig:
    min_clients: int
    expected_clients: int = 0  # 0: close only on the deadline
    timeout_seconds: float = 0.0  # 0: no deadline
    vector_length: int = 0  # 0: fixed by the round's first counted submission

    def validate(self) -> RoundConfig:
        if self.min_clients < 1:
            raise InvalidInput("min_clients must be at least 1")
        if self.expected_clients and self.expected_clients < self.min_clients:
            raise InvalidInput("expected_clients must be 0 or at least min_clients")
        if self.timeout_seconds < 0:
            raise InvalidInput("timeout_seconds must not be negative")
        if not self.expected_clients and not self.timeout_seconds:
            raise InvalidInput("a round needs expected_clients or a timeout, or it can never close")
        if self.vector_length and not 2 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise InvalidInput(f"vector_length must be 0 or in [2, {MAX_VECTOR_LENGTH}]")
        return self


def decode(message_type: type[M], body: bytes, what: str) -> M:
    """Parse an untrusted protobuf body; InvalidInput (never a parser exception) on garbage."""
    try:
        return message_type.FromString(body)
    except Exception:
        raise InvalidInput(f"{what} is not a valid {message_type.__name__} message") from None


@dataclass(frozen=True)
class Stage:
    """What a client must do next in a round: a stage name and its scheme-defined body.
    `submit_follows`: the client's answer is followed at once by its submission (a SUBMIT stage
    without a body), nothing in between, so a transport may carry the two in one exchange (the
    client still answers first). `opening`: the stage a client enters the round with; it has no
    body and depends on nothing but the round id, so a client may answer it before the round
    opens. `final`: the client's last stage of the round, after which it keeps nothing of the
    round; a transport may ask, in the same exchange, for the opening answer of the round that
    follows (one exchange fewer per round)."""

    name: str
    body: bytes = b""
    submit_follows: bool = False
    opening: bool = False
    final: bool = False


@dataclass
class Protected:
    """A protected update ready to stream: its chunks and the scheme's fields of the receipt."""

    chunks: list[bytes]
    vector_length: int
    receipt: common_pb2.Receipt = field(default_factory=common_pb2.Receipt)


class ClientRound(Protocol):
    """One client's part in one round."""

    def answer(self, stage: Stage) -> bytes:
        """The signed reply to an interactive stage; raises (and reveals nothing) when the
        request is not one an honest client may answer."""

    def protect(self, stage: Stage) -> Protected:
        """The protected update, for the SUBMIT stage (whose body may carry what the scheme
        needs first, e.g. SecAgg+'s incoming shares)."""


class ClientScheme(Protocol):
    name: str
    interactive: bool  # False: the client submits at once, without asking for a stage

    def check(self, vector: np.ndarray, weight: float) -> None:
        """Raise InvalidInput if this update can never be protected under the site's pins (a
        weight or value out of range). Called before the client joins a round, so a refused
        update leaves nothing behind."""

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> ClientRound:
        """Begin a round with the flat update `vector` and its `weight`."""


class ExportableRound(ClientRound, Protocol):
    def export(self) -> bytes:
        """Everything this round needs for its next stages (secret: the caller seals it)."""

    def provide(self, vector: np.ndarray, weight: float) -> None:
        """The update of a round that `ResumableScheme.begin` started without one; refused once
        the round has one or has sent it."""


class ResumableScheme(ClientScheme, Protocol):
    """What an interactive scheme's client half adds for transports that keep no client process
    alive between stages (Flower runs a ClientApp per message): after each stage the transport
    exports the round, keeps it sealed (`securefl.rounds.sealed`) and resumes it when the next
    stage arrives. Such a transport may also start a round before the update exists (`begin`)
    and `provide` it at the SUBMIT stage, so the stages before it carry no update and the
    kept state stays small. A non-interactive round ends with its one `protect` and needs
    none of this."""

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> ExportableRound: ...

    def begin(self, round_id: str) -> ExportableRound:
        """A round whose update comes later, through `ExportableRound.provide`."""

    def resume(self, round_id: str, exported: bytes) -> ExportableRound:
        """The round `export` described; refuses a state of another round."""


class Accumulator(Protocol):
    """One round's running sum. Memory is O(model), whatever the number of clients
    (`accumulate.ChunkedSum` is the implementation every scheme uses)."""

    def add(self, submission: Sequence[Any]) -> None:
        """Add one whole, validated submission into the sum, in place. Safe to call from several
        threads at once."""

    def snapshot(self) -> list[bytes]:
        """The sum as chunks of bytes, for a checkpoint (no add runs meanwhile)."""

    def restore(self, chunks: Sequence[bytes]) -> None:
        """Become the sum a `snapshot` wrote."""


class ServerRound(Protocol):
    """A scheme's state for one round on the aggregator. The engine calls it under the round's
    lock, so implementations need no locking of their own.

    `failure` becomes an error when the scheme itself must abort the round (for example too few
    clients left in a stage); the engine then fails the round with it."""

    failure: Exception | None

    @property
    def phase(self) -> str:
        """Changes whenever `stage_for` may change for a client other than the one whose call
        changed the round (a new stage opens, clients are counted as dropped): the engine wakes
        the clients waiting for their next stage only then."""

    def stage_for(self, client_id: str, submitted: bool) -> Stage | None:
        """What `client_id` must do now; None while it has nothing to do. Raises when the
        client takes no further part (e.g. counted as dropped)."""

    def answer(self, client_id: str, stage: str, body: bytes) -> None:
        """Take a client's reply to a stage; raises (changing nothing) on a bad reply."""

    def admit(self, receipt: common_pb2.Receipt) -> None:
        """Raise unless the receipt's client may submit this protected update now (the scheme's
        receipt fields included). Changes nothing."""

    def expected_submissions(self, configured: int) -> int:
        """How many submissions close the round early (0: only the deadline does)."""

    def submission_deadline(self, opened_at: float, timeout_seconds: float) -> float | None:
        """When the round stops taking submissions."""

    def tick(self, now: float) -> bool:
        """Close the scheme's own stages whose deadlines have passed; True if anything changed
        (the engine logs it, so a replay after a restart makes the same change)."""

    def begin_reveal(self, contributors: Sequence[str]) -> None:
        """The round closed with these contributors; start whatever revealing the sum needs."""

    def reveal_ready(self, now: float) -> bool:
        """Whether `reveal` can run (e.g. SecAgg+ has its unmask answers or their deadline)."""

    def reveal(self, accumulator: Accumulator, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        """Turn the running sum into the plaintext sum vector (weights last). May block on a
        remote party (the key-holder); called without the round's lock."""


class ServerScheme(Protocol):
    """A scheme's server half. A round's state must follow only from the calls the engine
    makes and the readings of the `clock` it passes to `new_round`: after a restart the engine
    replays the round's log into a fresh round and expects the same state."""

    name: str
    chunk_values: int
    chunk_bytes: int  # the most bytes one chunk may have on the wire, and in memory once parsed
    result_dtype: np.dtype  # what the published average is sent as: enough for the scheme's precision

    def describe(self, session: aggregator_pb2.Session) -> None:
        """Fill in the public parameters clients need (and check against their pins)."""

    def new_round(self, round_id: str, config: RoundConfig, opened_at: float,
                  clock: Callable[[], float]) -> ServerRound:
        """A round's state; it reads the time only through `clock`."""

    def new_accumulator(self) -> Accumulator: ...

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> Any:
        """Validate one untrusted chunk; raise MalformedCiphertext. Changes no state."""


class SingleStageRound:
    """The server round of schemes whose only client message is the protected update: the
    round's configuration alone decides when it closes, and revealing needs no stage."""

    failure: Exception | None = None
    phase = SUBMIT  # a client's stage depends on its own submission only

    def stage_for(self, client_id: str, submitted: bool) -> Stage | None:
        return None if submitted else Stage(SUBMIT)

    def answer(self, client_id: str, stage: str, body: bytes) -> None:
        raise InvalidInput(f"this scheme has no stage {stage!r:.40}")

    def admit(self, receipt: common_pb2.Receipt) -> None:
        return None

    def expected_submissions(self, configured: int) -> int:
        return configured

    def submission_deadline(self, opened_at: float, timeout_seconds: float) -> float | None:
        return opened_at + timeout_seconds if timeout_seconds else None

    def tick(self, now: float) -> bool:
        return False

    def begin_reveal(self, contributors: Sequence[str]) -> None:
        return None

    def reveal_ready(self, now: float) -> bool:
        return True


def signed_receipt(identity: Identity, round_id: str, scheme: str, spec_hash: bytes, protected: Protected,
                   digest: str = RECEIPT_DIGEST) -> common_pb2.Receipt:
    """The client's signed statement of what it submits: the scheme's receipt fields plus the
    round, the client, the model spec, the length and the digest of the protected chunks (with
    the hash the aggregator's session names: `receipt_digest_of`)."""
    receipt = common_pb2.Receipt()
    receipt.CopyFrom(protected.receipt)
    receipt.round_id, receipt.client_id, receipt.scheme = round_id, identity.client_id, scheme
    receipt.spec_hash, receipt.vector_length = spec_hash, protected.vector_length
    receipt.digest = ChunkDigest.of(protected.chunks, digest)
    sign_receipt(identity, receipt)
    return receipt
