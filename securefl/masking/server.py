"""The aggregator's half of SecAgg+: routes keys, encrypted shares and signed statements between
clients, sums masked inputs modulo 2^bits as they stream in, and removes the masks at the end.

Stages and who takes part (Bonawitz et al.'s U1 ⊇ U2 ⊇ U3 ⊇ U4 ⊇ U5):

1. advertise keys      U1: clients that sent signed X25519 keys
2. share keys          U2: clients of U1 that sent committed, encrypted shares to their neighbours
3. mask set + input    U3: clients of U2 that stated their mask set and whose masked update was
                           accepted (mask set, then the SUBMIT stage, per client)
4. confirm survivors   U4: clients of U3 that signed the survivor set S = U3 (the consistency
                           stage); at least the confirmation quorum of U1 must sign
5. unmask              U5: clients of U4 that revealed shares: self-mask shares of S, mask-key
                           shares of U2 \\ S, checked one by one against the dealers' commitments

A stage closes when every client of the previous stage has answered, or at its deadline;
clients missing then are dropouts, and their late messages are refused. With fewer than the
minimum participants left, too few confirmations, or too few shares to unmask, the round aborts
with a clear error. A client whose signed message proves it cheated is named
(`ProtocolViolation`): a holder revealing a share that does not match the dealer's signed
commitment, or a dealer whose committed shares do not rebuild its committed seed or advertised
mask key. The sum is then never released, so a malicious client cannot make it wrong silently.

Nothing here is trusted by the clients: what keeps their inputs private against this half
lying is argued in `securefl.masking.client`. The round engine calls a `SecAggRound` under the
round's lock and drives its deadlines; this module holds no lock, starts no thread, draws no
randomness and reads time only through the clock it is given (the engine's, per round), so
replaying the same calls with the same clock readings reproduces the same state: after an
aggregator restart the engine replays a round's log into a fresh `SecAggRound` and the round
continues in its stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, MalformedCiphertext, ProtocolViolation, RoundClosed, RoundFailed
from ..federation import Federation
from ..identity import Roster
from ..prg import apply_masks
from ..quantize import FixedPoint
from ..rounds.accumulate import ChunkedSum, array_ops
from ..rounds.scheme import DONE, SUBMIT, RoundConfig, Stage, decode
from ..v1 import aggregator_pb2, common_pb2, secagg_pb2
from . import keys, shamir
from .graph import choose_params
from .policy import secagg_config
from .statements import (
    KEY_SHARE, SEED_SHARE, mask_set_message, self_seed_commitment, share_commitment, survivors_message, unsigned,
)
from .view import RoundView

SECAGG = "secagg"
ADVERTISE, SHARE, MASK_SET, CONFIRM, UNMASK = "advertise_keys", "share_keys", "mask_set", "confirm_survivors", "unmask"
MASKED = SUBMIT  # the stage in which clients state their mask set and send their masked input
STAGE_ORDER = (ADVERTISE, SHARE, MASKED, CONFIRM, UNMASK, DONE)
MASKED_CHUNK_VALUES = 262144  # 1 MiB of uint32 per message: fewer, larger messages cost gRPC less
MAX_SHARE_BYTES = 256
COMMITMENT_BYTES = 32


class SecAggServer:
    name = SECAGG
    chunk_values = MASKED_CHUNK_VALUES

    def __init__(self, config: secagg_pb2.SecAggConfig, roster: Roster, stage_timeout: float,
                 clock: Callable[[], float] = time.time) -> None:
        if stage_timeout <= 0:
            raise InvalidInput("secure aggregation needs a positive stage timeout: it is how dropouts are detected")
        self.config = config
        self.encoding = FixedPoint(config.bits, config.frac_bits, config.value_bound, config.max_weight)
        self.roster = roster
        self.min_clients = max(2, config.min_participants)
        self.stage_timeout = stage_timeout
        self.clock = clock
        self.chunk_bytes = self.encoding.dtype.itemsize * MASKED_CHUNK_VALUES
        # the average's resolution is 2^-frac_bits of a weighted value: float32 carries up to 24 bits
        self.result_dtype = np.dtype(np.float32 if config.frac_bits <= 24 else np.float64)

    @classmethod
    def configured(cls, federation: Federation, min_clients: int, stage_timeout: float) -> SecAggServer:
        """The scheme with the security parameters of the federation file every site pins (and
        at least `min_clients` participants in every stage)."""
        config = secagg_config(federation.security, len(federation.roster), min_clients)
        return cls(config, federation.roster, stage_timeout)

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
    view: RoundView | None = None
    shares: dict[str, secagg_pb2.ShareKeysRequest] = field(default_factory=dict)
    mask_sets: dict[str, secagg_pb2.MaskSet] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    confirmations: dict[str, secagg_pb2.SurvivorConfirmation] = field(default_factory=dict)
    reveals: dict[str, secagg_pb2.UnmaskResponse] = field(default_factory=dict)
    failure: Exception | None = None
    clock: Callable[[], float] = time.time
    _participants: bytes = b""
    _commitments: dict[tuple[str, str], tuple[bytes, bytes]] = field(default_factory=dict)  # (dealer, holder)

    @property
    def threshold(self) -> int:
        return self.view.threshold if self.view else 0

    @property
    def phase(self) -> str:
        """Only a stage's opening (which also counts the late clients as dropped) changes what
        a client other than the one answering must do."""
        return self.stage

    def _graph(self) -> dict[str, list[str]]:
        assert self.view is not None
        return self.view.graph

    # -- what each client must do ----------------------------------------------------------

    def stage_for(self, client_id: str, submitted: bool) -> Stage | None:
        if self.stage == ADVERTISE:
            return None if client_id in self.adverts else Stage(ADVERTISE, opening=True)
        if self.stage == SHARE:
            self._require(client_id in self.adverts, f"client {client_id} did not advertise keys in time and counts as dropped")
            return None if client_id in self.shares else Stage(SHARE, self._participants)
        if self.stage == MASKED:
            self._require(client_id in self.shares, f"client {client_id} did not share keys in time and counts as dropped")
            if client_id not in self.mask_sets:
                return Stage(MASK_SET, self._incoming_shares(client_id), submit_follows=True)
            return None if submitted else Stage(SUBMIT)
        if self.stage == CONFIRM:
            self._require(client_id in self.survivors, f"the masked input of {client_id} was not part of round {self.round_id}")
            if client_id not in self.confirmations:
                return Stage(CONFIRM, secagg_pb2.SurvivorSet(survivors=self.survivors).SerializeToString())
        if self.stage == UNMASK:
            self._require(client_id in self.survivors, f"the masked input of {client_id} was not part of round {self.round_id}")
            if client_id in self.confirmations and client_id not in self.reveals:
                return Stage(UNMASK, self._unmask_request(client_id), final=True)
        return None

    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise RoundClosed(message)

    def _incoming_shares(self, client_id: str) -> bytes:
        incoming = [s for sender in self._graph()[client_id] if sender in self.shares
                    for s in self.shares[sender].shares if s.recipient == client_id]
        return secagg_pb2.IncomingShares(shared=sorted(self.shares), shares=incoming).SerializeToString()

    def _unmask_request(self, client_id: str) -> bytes:
        owners = set(self._graph()[client_id]).intersection(self.survivors)
        return secagg_pb2.UnmaskRequest(
            survivors=self.survivors, confirmations=[self.confirmations[c] for c in sorted(self.confirmations)],
            mask_sets=[self.mask_sets[o] for o in sorted(owners)],
        ).SerializeToString()

    # -- client replies --------------------------------------------------------------------

    def answer(self, client_id: str, stage: str, body: bytes) -> None:
        expected_stage = {ADVERTISE: ADVERTISE, SHARE: SHARE, MASK_SET: MASKED, CONFIRM: CONFIRM, UNMASK: UNMASK}
        if stage not in expected_stage:
            raise InvalidInput(f"secure aggregation has no stage {stage!r:.40} to answer")
        if expected_stage[stage] != self.stage:
            raise RoundClosed(f"round {self.round_id} is in stage {self.stage}; a {stage} message of {client_id} "
                              "is late or early and refused")
        if stage == ADVERTISE:
            self._advertise(client_id, decode(secagg_pb2.KeyAdvertisement, body, "a key advertisement"))
        elif stage == SHARE:
            self._share_keys(client_id, decode(secagg_pb2.ShareKeysRequest, body, "a share message"))
        elif stage == MASK_SET:
            self._mask_set(client_id, decode(secagg_pb2.MaskSet, body, "a mask set"))
        elif stage == CONFIRM:
            self._confirm(client_id, decode(secagg_pb2.SurvivorConfirmation, body, "a survivor confirmation"))
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
        known = {k for a in self.adverts.values() for k in (a.cipher_public_key, a.mask_public_key)}
        if advert.cipher_public_key == advert.mask_public_key or {advert.cipher_public_key, advert.mask_public_key} & known:
            raise InvalidInput("advertised round keys must be fresh: each differs from every other advertised key")
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
        if sorted(recipients) != sorted(self._graph()[client_id]) or any(
            s.sender != client_id or len(s.ciphertext) > MAX_SHARE_BYTES
            or len(s.seed_commitment) != COMMITMENT_BYTES or len(s.key_commitment) != COMMITMENT_BYTES
            for s in request.shares
        ) or len(request.self_seed_commitment) != COMMITMENT_BYTES:
            raise InvalidInput("shares must go, one each and committed to, to exactly the sender's neighbours")
        self.shares[client_id] = request
        for share in request.shares:
            self._commitments[(client_id, share.recipient)] = (share.seed_commitment, share.key_commitment)
        if len(self.shares) == len(self.adverts):
            self._close_sharing()

    def _mask_set(self, client_id: str, mask_set: secagg_pb2.MaskSet) -> None:
        self._check_sender(client_id, mask_set)
        if client_id not in self.shares or client_id in self.mask_sets:
            raise InvalidInput(f"client {client_id} may not state a mask set (again) in this round")
        assert self.view is not None
        self.scheme.roster.verify(client_id, mask_set_message(self.round_id, self.view.digest, client_id,
                                                              mask_set.masked_with), mask_set.signature)
        masked_with = set(mask_set.masked_with)
        if len(masked_with) != len(mask_set.masked_with) or masked_with != self.view.neighbours_in(client_id, self.shares):
            raise InvalidInput(f"client {client_id} must mask against exactly its neighbours that shared keys")
        self.mask_sets[client_id] = mask_set

    def _confirm(self, client_id: str, confirmation: secagg_pb2.SurvivorConfirmation) -> None:
        self._check_sender(client_id, confirmation)
        if client_id not in self.survivors or client_id in self.confirmations:
            raise InvalidInput(f"client {client_id} may not confirm the survivors (again) in this round")
        assert self.view is not None
        self.scheme.roster.verify(client_id, survivors_message(self.round_id, self.view.digest, client_id,
                                                               self.survivors), confirmation.signature)
        self.confirmations[client_id] = confirmation
        if len(self.confirmations) == len(self.survivors):
            self._close_confirming()

    def _unmask(self, client_id: str, response: secagg_pb2.UnmaskResponse) -> None:
        """Take a holder's shares after checking each against the dealer's signed commitment; a
        share that does not match proves the holder cheated, and aborts the round naming it."""
        self._check_sender(client_id, response)
        self.scheme.roster.verify(client_id, unsigned(response), response.signature)
        if client_id not in self.confirmations or client_id in self.reveals:
            raise InvalidInput(f"client {client_id} may not reveal shares (again) in this round")
        assert self.view is not None
        dealers = set(self.view.graph[client_id]).intersection(self.shares)
        expected = {(SEED_SHARE, o) for o in dealers.intersection(self.survivors)} | {
            (KEY_SHARE, o) for o in dealers.intersection(self.dropped)}
        revealed = [(SEED_SHARE, s) for s in response.seed_shares] + [(KEY_SHARE, s) for s in response.key_shares]
        owners = [(kind, s.owner) for kind, s in revealed]
        if len(set(owners)) != len(owners) or not set(owners) <= expected:
            raise InvalidInput(f"client {client_id} revealed shares it does not hold or may not reveal")
        if any(len(s.share) != shamir.SHARE_BYTES for _, s in revealed):
            raise InvalidInput("revealed shares have the wrong size")
        for kind, share in revealed:
            commitment = self._commitments[(share.owner, client_id)][0 if kind == SEED_SHARE else 1]
            if share_commitment(kind, self.round_id, self.view.digest, share.owner, client_id, share.share) != commitment:
                self.failure = ProtocolViolation(
                    f"round {self.round_id} aborted: client {client_id} revealed a share of {share.owner} that does "
                    f"not match the commitment {share.owner} signed; nothing was revealed")
                self.stage = DONE
                return
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
        config = self.scheme.config
        degree, threshold = choose_params(len(self.adverts), config.dropout_fraction, config.corrupt_fraction)
        self.view = RoundView(self.round_id, dict(self.adverts), degree, threshold, config.corrupt_fraction)
        self._participants = self.view.participants().SerializeToString()
        self._open_stage(SHARE)

    def _close_sharing(self) -> None:
        if len(self.shares) < self.scheme.min_clients:
            return self._fail(f"only {len(self.shares)} clients shared keys; {self.scheme.min_clients} needed")
        self._open_stage(MASKED)

    def _close_confirming(self) -> None:
        assert self.view is not None
        if len(self.confirmations) < self.view.quorum:
            return self._fail(f"only {len(self.confirmations)} of the {self.view.size} participants confirmed the "
                              f"survivor set; {self.view.quorum} are needed before anyone reveals a share")
        self._open_stage(UNMASK)

    def tick(self, now: float) -> bool:
        """Close the advertise, share or confirm stage at its deadline: the silent count as
        dropped. True when a stage closed."""
        if now < self.stage_opened + self.scheme.stage_timeout or self.stage not in (ADVERTISE, SHARE, CONFIRM):
            return False
        if self.stage == ADVERTISE:
            self._close_advertising()
        elif self.stage == SHARE:
            self._close_sharing()
        else:
            self._close_confirming()
        return True

    # -- submissions and revealing -----------------------------------------------------------

    def admit(self, receipt: common_pb2.Receipt) -> None:
        if self.stage != MASKED:
            raise RoundClosed(f"round {self.round_id} is in stage {self.stage}, not taking masked inputs")
        client_id = receipt.client_id
        if client_id not in self.shares:
            raise RoundClosed(f"client {client_id} did not share keys in round {self.round_id} and counts as dropped")
        if client_id not in self.mask_sets:
            raise RoundClosed(f"client {client_id} sends its masked input only after stating its mask set")

    def expected_submissions(self, configured: int) -> int:
        return len(self.shares) if self.stage == MASKED else 0

    def submission_deadline(self, opened_at: float, timeout_seconds: float) -> float | None:
        return self.stage_opened + self.scheme.stage_timeout if self.stage == MASKED else None

    def begin_reveal(self, contributors: Sequence[str]) -> None:
        """The masked inputs of `contributors` are in the sum: ask them to confirm that set."""
        assert self.view is not None
        self.survivors = sorted(contributors)
        self.dropped = sorted(set(self.shares) - set(self.survivors))
        needed = max(self.view.quorum, self.scheme.min_clients)
        if len(self.survivors) < needed:
            return self._fail(f"only {len(self.survivors)} masked inputs arrived; unmasking needs {needed}")
        self._open_stage(CONFIRM)

    def reveal_ready(self, now: float) -> bool:
        if self.stage != UNMASK:
            return False
        return len(self.reveals) == len(self.confirmations) or now >= self.stage_opened + self.scheme.stage_timeout

    def reveal(self, accumulator: ChunkedSum, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        """Close the unmask stage (later reveals are refused) and remove the masks: the exact
        sum of the survivors' encoded inputs, decoded."""
        self.stage = DONE
        total = accumulator.concatenated()
        self._remove_masks(total, self._revealed_shares())
        return self.scheme.encoding.decode(total)

    def _revealed_shares(self) -> dict[tuple[bytes, str], dict[int, bytes]]:
        """(kind, owner) -> {holder's position: share}, from every unmask response, in one pass."""
        assert self.view is not None
        shares: dict[tuple[bytes, str], dict[int, bytes]] = {}
        for holder, response in sorted(self.reveals.items()):
            position = self.view.positions[holder]
            for kind, revealed in ((SEED_SHARE, response.seed_shares), (KEY_SHARE, response.key_shares)):
                for share in revealed:
                    shares.setdefault((kind, share.owner), {})[position] = share.share
        return shares

    def _reconstruct(self, owner: str, kind: bytes, revealed: dict[tuple[bytes, str], dict[int, bytes]]) -> bytes:
        """The owner's secret from t commitment-checked shares; a dealer whose shares do not
        rebuild what it committed to is named."""
        assert self.view is not None
        shares = revealed.get((kind, owner), {})
        if len(shares) < self.threshold:
            raise RoundFailed(f"round {self.round_id} aborted: only {len(shares)} of the {self.threshold} shares "
                              f"needed to unmask {owner} arrived (too many dropouts)")
        try:
            secret = shamir.combine(shares, self.threshold)
        except ValueError:
            secret = b""
        if kind == SEED_SHARE:
            committed = self.shares[owner].self_seed_commitment
            valid = bool(secret) and self_seed_commitment(self.round_id, self.view.digest, owner, secret) == committed
        else:
            valid = bool(secret) and keys.public_bytes(keys.private_key(secret)) == self.adverts[owner].mask_public_key
        if not valid:
            raise ProtocolViolation(f"round {self.round_id} aborted: client {owner} dealt shares that do not rebuild "
                                    f"its committed {'self-mask seed' if kind == SEED_SHARE else 'mask key'}")
        return secret

    def _remove_masks(self, total: np.ndarray, revealed: dict[tuple[bytes, str], dict[int, bytes]]) -> None:
        """Subtract every survivor's self mask and the pairwise masks survivors share with
        dropped clients; the pairwise masks between survivors cancel by construction."""
        added, subtracted = [], [self._reconstruct(survivor, SEED_SHARE, revealed) for survivor in self.survivors]
        for gone in self.dropped:
            mask_key = self._reconstruct(gone, KEY_SHARE, revealed)
            for survivor in self._graph()[gone]:  # each masked against it (its checked mask set says so)
                if survivor not in self.survivors:
                    continue
                seed = keys.derive(mask_key, self.adverts[survivor].mask_public_key, keys.MASK_SEED_LABEL,
                                   self.round_id, survivor, gone)
                (subtracted if survivor < gone else added).append(seed)
        apply_masks(total, added, subtracted)
