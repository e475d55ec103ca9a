"""The aggregator's half of SecAgg+: routes keys and encrypted shares between clients, sums
masked inputs modulo 2^bits as they stream in, and removes the masks at the end.

Stages and who takes part (Bonawitz et al.'s U1 ⊇ U2 ⊇ U3 ⊇ U4):

1. advertise keys   U1: clients that sent signed X25519 keys
2. share keys       U2: clients of U1 that sent encrypted shares to their neighbours
3. masked input     U3: clients of U2 whose masked update was accepted (the SUBMIT stage)
4. unmask           U4: clients of U3 that revealed shares: self-mask shares of U3,
                        mask-key shares of U2 \\ U3

A stage closes when every client of the previous stage has answered, or at its deadline;
clients missing then are dropouts, and their late messages are refused. With fewer than
`min_clients` left, or too few shares to unmask, the round aborts with a clear error. The
aggregator learns the sum of U3's inputs and nothing else, as long as fewer than the
threshold of any client's neighbours collude with it.

The round engine calls a `SecAggRound` under the round's lock and drives its deadlines; this
module holds no lock and starts no thread. A round's state follows only from the engine's calls
and the readings of the clock the engine hands it, so after an aggregator restart the engine
replays the round's log into a fresh `SecAggRound` and the round continues in its stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, MalformedCiphertext, RoundClosed, RoundFailed
from ..identity import Roster
from ..quantize import FixedPoint
from ..rounds.accumulate import ChunkedSum, array_ops
from ..rounds.scheme import DONE, SUBMIT, RoundConfig, Stage, decode
from ..v1 import aggregator_pb2, common_pb2, secagg_pb2
from . import keys, shamir
from .graph import choose_params, graph_seed, neighbours
from .prg import expand

SECAGG = "secagg"
ADVERTISE, SHARE, UNMASK = "advertise_keys", "share_keys", "unmask"
MASKED = SUBMIT  # the stage in which clients send their masked input
STAGE_ORDER = (ADVERTISE, SHARE, MASKED, UNMASK, DONE)
MASKED_CHUNK_VALUES = 262144  # 1 MiB of uint32 per message: fewer, larger messages cost gRPC less
MAX_SHARE_BYTES = 256


def secagg_config(max_clients: int, value_bound: float = 10.0, max_weight: float = 1000.0,
                  dropout_fraction: float = 0.1, corrupt_fraction: float = 0.1) -> secagg_pb2.SecAggConfig:
    """Public parameters for a federation of up to `max_clients` (the enrolled clients)."""
    encoding = FixedPoint.for_round(max_clients, value_bound, max_weight)
    choose_params(max(max_clients, 2), dropout_fraction, corrupt_fraction)  # validates the fractions
    return secagg_pb2.SecAggConfig(
        value_bound=value_bound, max_weight=max_weight, bits=encoding.bits, frac_bits=encoding.frac_bits,
        dropout_fraction=dropout_fraction, corrupt_fraction=corrupt_fraction,
    )


@dataclass(frozen=True)
class SecAggSettings:
    """The aggregator operator's options of the masking scheme."""

    stage_timeout: float = 30.0
    value_bound: float = 10.0
    max_weight: float = 1000.0
    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.1


class SecAggServer:
    name = SECAGG
    chunk_values = MASKED_CHUNK_VALUES

    def __init__(self, config: secagg_pb2.SecAggConfig, roster: Roster, min_clients: int,
                 stage_timeout: float, clock: Callable[[], float] = time.time) -> None:
        if stage_timeout <= 0:
            raise InvalidInput("secure aggregation needs a positive stage timeout: it is how dropouts are detected")
        self.config = config
        self.encoding = FixedPoint(config.bits, config.frac_bits, config.value_bound, config.max_weight)
        self.roster = roster
        self.min_clients = max(2, min_clients)
        self.stage_timeout = stage_timeout
        self.clock = clock
        self.chunk_bytes = self.encoding.dtype.itemsize * MASKED_CHUNK_VALUES
        # the average's resolution is 2^-frac_bits of a weighted value: float32 carries up to 24 bits
        self.result_dtype = np.dtype(np.float32 if config.frac_bits <= 24 else np.float64)

    @classmethod
    def configured(cls, settings: SecAggSettings, roster: Roster, min_clients: int) -> SecAggServer:
        config = secagg_config(len(roster), settings.value_bound, settings.max_weight, settings.dropout_fraction,
                               settings.corrupt_fraction)
        return cls(config, roster, min_clients, settings.stage_timeout)

    def describe(self, session: aggregator_pb2.Session) -> None:
        session.secagg.CopyFrom(self.config)
        session.max_abs_sum = float(2 ** (self.config.bits - 1 - self.config.frac_bits))

    def new_round(self, round_id: str, config: RoundConfig, opened_at: float,
                  clock: Callable[[], float] | None = None) -> SecAggRound:
        """`clock`: where the round reads the time (the engine's, so that a replay after a
        restart sees the same readings); the server's own by default."""
        return SecAggRound(self, round_id, config.expected_clients, stage_opened=opened_at, clock=clock or self.clock)

    def new_accumulator(self) -> ChunkedSum:
        """Sums of masked inputs wrap modulo 2^bits, as the protocol requires."""
        return ChunkedSum(array_ops(self.encoding.dtype))

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> np.ndarray:
        size = self.encoding.dtype.itemsize
        if len(data) != size * expected_values:
            raise MalformedCiphertext(f"chunk {index} has {len(data)} bytes, expected {size * expected_values}")
        return np.frombuffer(data, dtype=self.encoding.dtype.newbyteorder("<"))


@dataclass
class SecAggRound:
    """One round's stage state on the aggregator."""

    scheme: SecAggServer
    round_id: str
    expected: int
    stage: str = ADVERTISE
    stage_opened: float = 0.0
    adverts: dict[str, secagg_pb2.KeyAdvertisement] = field(default_factory=dict)
    degree: int = 0
    threshold: int = 0
    graph: dict[str, list[str]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    shares: dict[str, list[secagg_pb2.EncryptedShare]] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reveals: dict[str, secagg_pb2.UnmaskResponse] = field(default_factory=dict)
    failure: Exception | None = None
    clock: Callable[[], float] = time.time
    _participants: bytes = b""

    # -- what each client must do ----------------------------------------------------------

    def stage_for(self, client_id: str, submitted: bool) -> Stage | None:
        if self.stage == ADVERTISE:
            return None if client_id in self.adverts else Stage(ADVERTISE)
        if self.stage == SHARE:
            self._require(client_id in self.adverts, f"client {client_id} did not advertise keys in time and counts as dropped")
            return None if client_id in self.shares else Stage(SHARE, self._participants)
        if self.stage == MASKED:
            self._require(client_id in self.shares, f"client {client_id} did not share keys in time and counts as dropped")
            return None if submitted else Stage(MASKED, self._incoming_shares(client_id))
        if self.stage == UNMASK:
            self._require(client_id in self.survivors, f"the masked input of {client_id} was not part of round {self.round_id}")
            if client_id not in self.reveals:
                return Stage(UNMASK, secagg_pb2.UnmaskRequest(survivors=self.survivors, dropped=self.dropped)
                             .SerializeToString())
        return None

    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise RoundClosed(message)

    def _incoming_shares(self, client_id: str) -> bytes:
        incoming = [s for sender in self.graph[client_id] for s in self.shares.get(sender, []) if s.recipient == client_id]
        return secagg_pb2.IncomingShares(shared=sorted(self.shares), shares=incoming).SerializeToString()

    # -- client replies --------------------------------------------------------------------

    def answer(self, client_id: str, stage: str, body: bytes) -> None:
        if stage not in (ADVERTISE, SHARE, UNMASK):
            raise InvalidInput(f"secure aggregation has no stage {stage!r:.40} to answer")
        if stage != self.stage:
            raise RoundClosed(f"round {self.round_id} is in stage {self.stage}; a {stage} message of {client_id} "
                              "is late or early and refused")
        if stage == ADVERTISE:
            self._advertise(client_id, decode(secagg_pb2.KeyAdvertisement, body, "a key advertisement"))
        elif stage == SHARE:
            self._share_keys(client_id, decode(secagg_pb2.ShareKeysRequest, body, "a share message"))
        else:
            self._unmask(client_id, decode(secagg_pb2.UnmaskResponse, body, "an unmask response"))

    def _check_sender(self, client_id: str, message) -> None:
        if message.client_id != client_id or message.round_id != self.round_id:
            raise InvalidInput(f"a message of {client_id} must name that client and round {self.round_id}")

    def _advertise(self, client_id: str, advert: secagg_pb2.KeyAdvertisement) -> None:
        self._check_sender(client_id, advert)
        if len(advert.cipher_public_key) != 32 or len(advert.mask_public_key) != 32:
            raise InvalidInput("advertised keys must be 32-byte X25519 public keys")
        self.scheme.roster.verify(client_id, keys.advertisement_message(
            advert.round_id, advert.client_id, advert.cipher_public_key, advert.mask_public_key), advert.signature)
        if client_id in self.adverts:
            raise InvalidInput(f"client {client_id} already advertised keys")
        self.adverts[client_id] = advert
        if self.expected and len(self.adverts) >= self.expected:
            self._close_advertising()

    def _share_keys(self, client_id: str, request: secagg_pb2.ShareKeysRequest) -> None:
        self._check_sender(client_id, request)
        self.scheme.roster.verify(client_id, unsigned(request), request.signature)
        if client_id not in self.adverts:
            raise RoundClosed(f"client {client_id} did not advertise keys and counts as dropped")
        if client_id in self.shares:
            raise InvalidInput(f"client {client_id} already shared keys")
        recipients = [s.recipient for s in request.shares]
        if sorted(recipients) != sorted(self.graph[client_id]) or any(
            s.sender != client_id or len(s.ciphertext) > MAX_SHARE_BYTES for s in request.shares
        ):
            raise InvalidInput("shares must go, one each, to exactly the sender's neighbours")
        self.shares[client_id] = list(request.shares)
        if len(self.shares) == len(self.adverts):
            self._close_sharing()

    def _unmask(self, client_id: str, response: secagg_pb2.UnmaskResponse) -> None:
        self._check_sender(client_id, response)
        self.scheme.roster.verify(client_id, unsigned(response), response.signature)
        if client_id not in self.survivors or client_id in self.reveals:
            raise InvalidInput(f"client {client_id} may not reveal shares (again) in this round")
        if any(len(s.share) != shamir.SHARE_BYTES for s in [*response.seed_shares, *response.key_shares]):
            raise InvalidInput("revealed shares have the wrong size")
        self.reveals[client_id] = response

    # -- stage transitions -----------------------------------------------------------------

    def _open_stage(self, stage: str) -> None:
        self.stage, self.stage_opened = stage, self.clock()

    def _fail(self, message: str) -> None:
        self.failure = RoundFailed(f"round {self.round_id} aborted: {message}")
        self.stage = DONE

    def _close_advertising(self) -> None:
        if len(self.adverts) < self.scheme.min_clients:
            return self._fail(f"only {len(self.adverts)} clients advertised keys; {self.scheme.min_clients} needed")
        ids = sorted(self.adverts)
        config = self.scheme.config
        self.degree, self.threshold = choose_params(len(ids), config.dropout_fraction, config.corrupt_fraction)
        self.graph = neighbours(ids, self.degree, graph_seed(self.round_id, ids))
        self.positions = {cid: i + 1 for i, cid in enumerate(ids)}
        self._participants = secagg_pb2.Participants(
            clients=[self.adverts[c] for c in ids], degree=self.degree, threshold=self.threshold).SerializeToString()
        self._open_stage(SHARE)

    def _close_sharing(self) -> None:
        if len(self.shares) < self.scheme.min_clients:
            return self._fail(f"only {len(self.shares)} clients shared keys; {self.scheme.min_clients} needed")
        self._open_stage(MASKED)

    def tick(self, now: float) -> bool:
        """Close the advertise or share stage at its deadline: the silent count as dropped.
        True when a stage closed."""
        if now < self.stage_opened + self.scheme.stage_timeout or self.stage not in (ADVERTISE, SHARE):
            return False
        if self.stage == ADVERTISE:
            self._close_advertising()
        else:
            self._close_sharing()
        return True

    # -- submissions and revealing -----------------------------------------------------------

    def admit(self, client_id: str) -> None:
        if self.stage != MASKED:
            raise RoundClosed(f"round {self.round_id} is in stage {self.stage}, not taking masked inputs")
        if client_id not in self.shares:
            raise RoundClosed(f"client {client_id} did not share keys in round {self.round_id} and counts as dropped")

    def expected_submissions(self, configured: int) -> int:
        return len(self.shares) if self.stage == MASKED else 0

    def submission_deadline(self, opened_at: float, timeout_seconds: float) -> float | None:
        return self.stage_opened + self.scheme.stage_timeout if self.stage == MASKED else None

    def begin_reveal(self, contributors: Sequence[str]) -> None:
        self.survivors = sorted(contributors)
        self.dropped = sorted(set(self.shares) - set(self.survivors))
        self._open_stage(UNMASK)

    def reveal_ready(self, now: float) -> bool:
        return len(self.reveals) == len(self.survivors) or now >= self.stage_opened + self.scheme.stage_timeout

    def reveal(self, accumulator: ChunkedSum, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        """Close the unmask stage (later reveals are refused) and remove the masks: the exact
        sum of the survivors' encoded inputs, decoded."""
        self.stage = DONE
        total = accumulator.concatenated()
        self._remove_masks(total)
        return self.scheme.encoding.decode(total)

    def _remove_masks(self, total: np.ndarray) -> None:
        """Subtract every survivor's self mask and the pairwise masks survivors share with
        dropped clients; the pairwise masks between survivors cancel by construction."""
        def reconstruct(owner: str, field_name: str) -> bytes:
            shares = {self.positions[responder]: s.share for responder, response in self.reveals.items()
                      for s in getattr(response, field_name) if s.owner == owner}
            if len(shares) < self.threshold:
                raise RoundFailed(f"round {self.round_id} aborted: only {len(shares)} of the {self.threshold} shares "
                                  f"needed to unmask {owner} arrived (too many dropouts)")
            try:
                return shamir.combine(shares, self.threshold)
            except ValueError as exc:
                raise RoundFailed(f"round {self.round_id} aborted: shares of {owner} are inconsistent: {exc}") from None

        dtype, count = total.dtype, total.size
        for survivor in self.survivors:
            total -= expand(reconstruct(survivor, "seed_shares"), count, dtype)
        for gone in self.dropped:
            mask_key = reconstruct(gone, "key_shares")
            for survivor in self.graph[gone]:
                if survivor not in self.survivors:
                    continue
                seed = keys.derive(mask_key, self.adverts[survivor].mask_public_key, keys.MASK_SEED_LABEL,
                                   self.round_id, survivor, gone)
                mask = expand(seed, count, dtype)
                if survivor < gone:
                    total -= mask
                else:
                    total += mask


def unsigned(message) -> bytes:
    """Deterministic bytes of a stage message without its signature: what the client signs."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.signature = b""
    return b"securefl/secagg/v1/" + type(message).__name__.encode() + copy.SerializeToString(deterministic=True)


def sign_stage_message(message, sign) -> None:
    message.signature = sign(unsigned(message))
