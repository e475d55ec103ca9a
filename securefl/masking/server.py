"""The aggregator's side of SecAgg+: routes keys and encrypted shares between clients, sums
masked inputs modulo 2^bits as they stream in, and removes the masks at the end.

Stages and who takes part (Bonawitz et al.'s U1 ⊇ U2 ⊇ U3 ⊇ U4):

1. advertise keys   U1: clients that sent signed X25519 keys
2. share keys       U2: clients of U1 that sent encrypted shares to their neighbours
3. masked input     U3: clients of U2 whose masked update was accepted (through Submit)
4. unmask           U4: clients of U3 that revealed shares: self-mask shares of U3,
                        mask-key shares of U2 \\ U3

A stage closes when every client of the previous stage has answered, or at its deadline;
clients missing then are dropouts, and their late messages are refused. With fewer than
`min_clients` left, or too few shares to unmask, the round aborts with a clear error. The
aggregator learns the sum of U3's inputs and nothing else, as long as fewer than the
threshold of any client's neighbours collude with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, MalformedCiphertext, RoundClosed, RoundFailed
from ..identity import Roster
from ..quantize import FixedPoint
from ..schemes import SECAGG
from ..v1 import aggregator_pb2
from . import keys, shamir
from .graph import choose_params, graph_seed, neighbours
from .prg import expand

ADVERTISE, SHARE, MASKED, UNMASK, DONE = "advertise_keys", "share_keys", "masked_input", "unmask", "done"
MASKED_CHUNK_VALUES = 65536
MAX_SHARE_BYTES = 256


class MaskedAccumulator:
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.total: np.ndarray | None = None

    def add(self, chunks: list[np.ndarray]) -> None:
        vector = np.concatenate(chunks)
        if self.total is None:
            self.total = vector.copy()
        else:
            self.total += vector  # wraps modulo 2^bits, as the protocol requires


@dataclass
class SecAggRound:
    round_id: str
    expected: int
    stage: str = ADVERTISE
    stage_opened: float = 0.0
    adverts: dict[str, aggregator_pb2.KeyAdvertisement] = field(default_factory=dict)
    degree: int = 0
    threshold: int = 0
    graph: dict[str, list[str]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    shares: dict[str, list[aggregator_pb2.EncryptedShare]] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reveals: dict[str, aggregator_pb2.UnmaskResponse] = field(default_factory=dict)
    error: Exception | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


def secagg_config(max_clients: int, value_bound: float = 10.0, max_weight: float = 1000.0,
                  dropout_fraction: float = 0.1, corrupt_fraction: float = 0.1) -> aggregator_pb2.SecAggConfig:
    """Public parameters for a federation of up to `max_clients` (the enrolled clients)."""
    encoding = FixedPoint.for_round(max_clients, value_bound, max_weight)
    choose_params(max(max_clients, 2), dropout_fraction, corrupt_fraction)  # validates the fractions
    return aggregator_pb2.SecAggConfig(
        value_bound=value_bound, max_weight=max_weight, bits=encoding.bits, frac_bits=encoding.frac_bits,
        dropout_fraction=dropout_fraction, corrupt_fraction=corrupt_fraction,
    )


class SecAggScheme:
    name = SECAGG
    chunk_values = MASKED_CHUNK_VALUES

    def __init__(self, config: aggregator_pb2.SecAggConfig, roster: Roster, min_clients: int, stage_timeout: float,
                 clock: Callable[[], float] = time.time) -> None:
        if stage_timeout <= 0:
            raise InvalidInput("secure aggregation needs a positive stage timeout: it is how dropouts are detected")
        self.config = config
        self.encoding = FixedPoint(config.bits, config.frac_bits, config.value_bound, config.max_weight)
        self.max_abs_sum = float(2 ** (config.bits - 1 - config.frac_bits))
        self._roster = roster
        self._min_clients = max(2, min_clients)
        self._stage_timeout = stage_timeout
        self._clock = clock
        self._rounds: dict[str, SecAggRound] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._watch_stages, name="secagg-stages", daemon=True).start()

    # -- AggregationScheme ------------------------------------------------------------------

    def new_accumulator(self) -> MaskedAccumulator:
        return MaskedAccumulator(self.encoding.dtype)

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> np.ndarray:
        size = self.encoding.dtype.itemsize
        if len(data) != size * expected_values:
            raise MalformedCiphertext(f"chunk {index} has {len(data)} bytes, expected {size * expected_values}")
        return np.frombuffer(data, dtype=self.encoding.dtype.newbyteorder("<"))

    def expected_submissions(self, round_id: str, configured: int) -> int:
        state = self._rounds.get(round_id)
        return len(state.shares) if state is not None and state.stage == MASKED else 0

    def submission_deadline(self, round_id: str, opened_at: float, timeout_seconds: float) -> float | None:
        state = self._rounds.get(round_id)
        if state is None or state.stage != MASKED:
            return None
        return state.stage_opened + self._stage_timeout

    def check_submitter(self, round_id: str, client_id: str) -> None:
        state = self._state(round_id)
        if state.stage != MASKED:
            raise RoundClosed(f"round {round_id} is in stage {state.stage}, not taking masked inputs")
        if client_id not in state.shares:
            raise RoundClosed(f"client {client_id} did not share keys in round {round_id} and counts as dropped")

    def reveal(self, accumulator: MaskedAccumulator, round_id: str, vector_length: int, spec_hash: bytes,
               receipts: list) -> np.ndarray:
        """Run the unmask stage for the clients whose input arrived, then remove the masks."""
        state = self.begin_unmask(round_id, [r.client_id for r in receipts])
        with state.changed:
            state.changed.wait_for(lambda: len(state.reveals) == len(state.survivors), timeout=self._stage_timeout)
        return self.encoding.decode(self.unmasked_total(state, accumulator))

    def begin_unmask(self, round_id: str, survivors: list[str]) -> SecAggRound:
        state = self._state(round_id)
        with state.changed:
            state.survivors = sorted(survivors)
            state.dropped = sorted(set(state.shares) - set(state.survivors))
            self._open_stage(state, UNMASK)
        return state

    def unmasked_total(self, state: SecAggRound, accumulator: MaskedAccumulator) -> np.ndarray:
        """Close the unmask stage (later reveals are refused) and return the exact sum of the
        survivors' encoded inputs modulo 2^bits."""
        with state.changed:
            state.stage = DONE
            state.changed.notify_all()
        assert accumulator.total is not None
        total = accumulator.total.copy()
        self._remove_masks(state, total)
        return total

    # -- stages -----------------------------------------------------------------------------

    def open(self, round_id: str, expected: int) -> None:
        with self._lock:
            if round_id not in self._rounds:
                self._rounds[round_id] = SecAggRound(round_id, expected, stage_opened=self._clock())

    def advertise(self, advert: aggregator_pb2.KeyAdvertisement) -> None:
        state = self._state(advert.round_id)
        if len(advert.cipher_public_key) != 32 or len(advert.mask_public_key) != 32:
            raise InvalidInput("advertised keys must be 32-byte X25519 public keys")
        self._roster.verify(advert.client_id, keys.advertisement_message(
            advert.round_id, advert.client_id, advert.cipher_public_key, advert.mask_public_key), advert.signature)
        with state.changed:
            self._require_stage(state, ADVERTISE, advert.client_id)
            if advert.client_id in state.adverts:
                raise InvalidInput(f"client {advert.client_id} already advertised keys")
            state.adverts[advert.client_id] = advert
            if state.expected and len(state.adverts) >= state.expected:
                self._close_advertising(state)

    def participants(self, round_id: str, client_id: str, timeout: float) -> aggregator_pb2.Participants | None:
        state = self._wait_past(round_id, ADVERTISE, timeout)
        if state is None:
            return None
        if client_id not in state.adverts:
            raise RoundClosed(f"client {client_id} did not advertise keys in time and counts as dropped")
        return aggregator_pb2.Participants(clients=[state.adverts[c] for c in sorted(state.adverts)],
                                           degree=state.degree, threshold=state.threshold)

    def share_keys(self, request: aggregator_pb2.ShareKeysRequest) -> None:
        state = self._state(request.round_id)
        self._roster.verify(request.client_id, _unsigned(request), request.signature)
        with state.changed:
            self._require_stage(state, SHARE, request.client_id)
            if request.client_id not in state.adverts:
                raise RoundClosed(f"client {request.client_id} did not advertise keys and counts as dropped")
            if request.client_id in state.shares:
                raise InvalidInput(f"client {request.client_id} already shared keys")
            recipients = [s.recipient for s in request.shares]
            if sorted(recipients) != sorted(state.graph[request.client_id]) or any(
                s.sender != request.client_id or len(s.ciphertext) > MAX_SHARE_BYTES for s in request.shares
            ):
                raise InvalidInput("shares must go, one each, to exactly the sender's neighbours")
            state.shares[request.client_id] = list(request.shares)
            if len(state.shares) == len(state.adverts):
                self._close_sharing(state)

    def incoming_shares(self, round_id: str, client_id: str, timeout: float) -> aggregator_pb2.IncomingShares | None:
        state = self._wait_past(round_id, SHARE, timeout)
        if state is None:
            return None
        if client_id not in state.shares:
            raise RoundClosed(f"client {client_id} did not share keys in time and counts as dropped")
        incoming = [s for sender in state.graph[client_id] for s in state.shares.get(sender, []) if s.recipient == client_id]
        return aggregator_pb2.IncomingShares(shared=sorted(state.shares), shares=incoming)

    def unmask_request(self, round_id: str, client_id: str, timeout: float) -> aggregator_pb2.UnmaskRequest | None:
        state = self._wait_past(round_id, MASKED, timeout)
        if state is None:
            return None
        if client_id not in state.survivors:
            raise RoundClosed(f"the masked input of {client_id} was not part of round {round_id}")
        return aggregator_pb2.UnmaskRequest(survivors=state.survivors, dropped=state.dropped)

    def unmask(self, response: aggregator_pb2.UnmaskResponse) -> None:
        state = self._state(response.round_id)
        self._roster.verify(response.client_id, _unsigned(response), response.signature)
        with state.changed:
            self._require_stage(state, UNMASK, response.client_id)
            if response.client_id not in state.survivors or response.client_id in state.reveals:
                raise InvalidInput(f"client {response.client_id} may not reveal shares (again) in this round")
            if any(len(s.share) != shamir.SHARE_BYTES for s in [*response.seed_shares, *response.key_shares]):
                raise InvalidInput("revealed shares have the wrong size")
            state.reveals[response.client_id] = response
            state.changed.notify_all()

    # -- internals --------------------------------------------------------------------------

    def _state(self, round_id: str) -> SecAggRound:
        with self._lock:
            state = self._rounds.get(round_id)
        if state is None:
            raise RoundClosed(f"round {round_id} has no secure aggregation under way")
        if state.error is not None:
            raise state.error
        return state

    def _require_stage(self, state: SecAggRound, stage: str, client_id: str) -> None:
        if state.error is not None:
            raise state.error
        if state.stage != stage:
            raise RoundClosed(f"round {state.round_id} has moved on to {state.stage}; message of {client_id} for "
                              f"{stage} is late and refused")

    def _open_stage(self, state: SecAggRound, stage: str) -> None:
        state.stage, state.stage_opened = stage, self._clock()
        state.changed.notify_all()

    def _fail(self, state: SecAggRound, message: str) -> None:
        state.error = RoundFailed(f"round {state.round_id} aborted: {message}")
        state.stage = DONE
        state.changed.notify_all()

    def _close_advertising(self, state: SecAggRound) -> None:
        if len(state.adverts) < self._min_clients:
            return self._fail(state, f"only {len(state.adverts)} clients advertised keys; {self._min_clients} needed")
        ids = sorted(state.adverts)
        state.degree, state.threshold = choose_params(len(ids), self.config.dropout_fraction, self.config.corrupt_fraction)
        state.graph = neighbours(ids, state.degree, graph_seed(state.round_id, ids))
        state.positions = {cid: i + 1 for i, cid in enumerate(ids)}
        self._open_stage(state, SHARE)

    def _close_sharing(self, state: SecAggRound) -> None:
        if len(state.shares) < self._min_clients:
            return self._fail(state, f"only {len(state.shares)} clients shared keys; {self._min_clients} needed")
        self._open_stage(state, MASKED)

    def _wait_past(self, round_id: str, stage: str, timeout: float) -> SecAggRound | None:
        """The round's state once it has left `stage`; None if it has not within `timeout`."""
        order = [ADVERTISE, SHARE, MASKED, UNMASK, DONE]
        state = self._state(round_id)
        with state.changed:
            if not state.changed.wait_for(
                lambda: state.error is not None or order.index(state.stage) > order.index(stage), timeout=timeout,
            ):
                return None
        if state.error is not None:
            raise state.error
        return state

    def expire_stage(self, round_id: str, stage: str) -> None:
        """Close `stage` of the round, if it is still open, as its deadline does: the clients
        that did not answer count as dropped."""
        state = self._state(round_id)
        with state.changed:
            if state.stage != stage:
                return
            if stage == ADVERTISE:
                self._close_advertising(state)
            elif stage == SHARE:
                self._close_sharing(state)

    def _watch_stages(self) -> None:
        while not self._stopped.wait(0.05):
            now = self._clock()
            with self._lock:
                due = [(s.round_id, s.stage) for s in self._rounds.values()
                       if s.error is None and s.stage in (ADVERTISE, SHARE) and now >= s.stage_opened + self._stage_timeout]
            for round_id, stage in due:
                self.expire_stage(round_id, stage)

    def _remove_masks(self, state: SecAggRound, total: np.ndarray) -> None:
        """Subtract every survivor's self mask and the pairwise masks survivors share with
        dropped clients; the pairwise masks between survivors cancel by construction."""
        def reconstruct(owner: str, field_name: str) -> bytes:
            shares = {state.positions[responder]: s.share for responder, response in state.reveals.items()
                      for s in getattr(response, field_name) if s.owner == owner}
            if len(shares) < state.threshold:
                raise RoundFailed(f"round {state.round_id} aborted: only {len(shares)} of the {state.threshold} shares "
                                  f"needed to unmask {owner} arrived (too many dropouts)")
            try:
                return shamir.combine(shares, state.threshold)
            except ValueError as exc:
                raise RoundFailed(f"round {state.round_id} aborted: shares of {owner} are inconsistent: {exc}") from None

        dtype, count = total.dtype, total.size
        for survivor in state.survivors:
            total -= expand(reconstruct(survivor, "seed_shares"), count, dtype)
        for gone in state.dropped:
            mask_key = reconstruct(gone, "key_shares")
            for survivor in state.graph[gone]:
                if survivor not in state.survivors:
                    continue
                seed = keys.derive(mask_key, state.adverts[survivor].mask_public_key, keys.MASK_SEED_LABEL,
                                   state.round_id, survivor, gone)
                mask = expand(seed, count, dtype)
                if survivor < gone:
                    total -= mask
                else:
                    total += mask

    def stop(self) -> None:
        self._stopped.set()


def _unsigned(message) -> bytes:
    """Deterministic bytes of a stage message without its signature: what the client signs."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.signature = b""
    return b"securefl/secagg/v1/" + type(message).__name__.encode() + copy.SerializeToString(deterministic=True)


def sign_stage_message(message, sign: Callable[[bytes], bytes]) -> None:
    message.signature = sign(_unsigned(message))
