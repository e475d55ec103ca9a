"""A client's side of one SecAgg+ round.

The client checks everything the untrusted aggregator relays: advertisements carry valid
identity signatures of enrolled clients (the roster is pinned, not taken from the
aggregator), the graph parameters are the ones it computes itself, shares decrypt under keys
bound to this round and these two clients, and an unmask request is refused when its
survivor and dropped sets overlap, contain strangers, or leave fewer survivors than the
threshold. It refuses a round of fewer than `min_participants` clients (from the federation
file), where the sum would say too much about each one. It reveals, for each neighbour, at
most one of its two secrets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, VerificationFailed
from ..identity import Identity, Roster
from ..quantize import FixedPoint
from ..v1 import aggregator_pb2
from . import keys, shamir
from .graph import choose_params, graph_seed, neighbours
from .prg import SEED_BYTES, expand
from .server import ADVERTISE, MASKED, SHARE, UNMASK, sign_stage_message

DROPOUT_POINTS = (ADVERTISE, SHARE, MASKED, UNMASK)


class SimulatedDropout(Exception):
    """Raised inside a client told to drop out at a stage (simulations and tests only)."""


@dataclass
class SecAggParticipant:
    """State of one client in one round: its round keys, its graph, the shares it holds."""

    identity: Identity
    roster: Roster
    config: aggregator_pb2.SecAggConfig
    round_id: str
    min_participants: int = 2
    cipher_key: object = field(default_factory=keys.new_private_key, repr=False)
    mask_key: object = field(default_factory=keys.new_private_key, repr=False)
    self_seed: bytes = field(default_factory=lambda: os.urandom(SEED_BYTES), repr=False)
    adverts: dict[str, aggregator_pb2.KeyAdvertisement] = field(default_factory=dict)
    graph: dict[str, list[str]] = field(default_factory=dict)
    threshold: int = 0
    shared: set[str] = field(default_factory=set)
    held: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)  # owner -> (seed share, key share)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # local computation per stage, no waiting

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    @property
    def encoding(self) -> FixedPoint:
        return FixedPoint(self.config.bits, self.config.frac_bits, self.config.value_bound, self.config.max_weight)

    def advertisement(self) -> aggregator_pb2.KeyAdvertisement:
        cipher_public, mask_public = keys.public_bytes(self.cipher_key), keys.public_bytes(self.mask_key)
        return aggregator_pb2.KeyAdvertisement(
            round_id=self.round_id, client_id=self.client_id, cipher_public_key=cipher_public,
            mask_public_key=mask_public, signature=self.identity.sign(
                keys.advertisement_message(self.round_id, self.client_id, cipher_public, mask_public)),
        )

    def accept_participants(self, participants: aggregator_pb2.Participants) -> None:
        for advert in participants.clients:
            if advert.round_id != self.round_id:
                raise VerificationFailed("an advertisement belongs to another round")
            self.roster.verify(advert.client_id, keys.advertisement_message(
                advert.round_id, advert.client_id, advert.cipher_public_key, advert.mask_public_key), advert.signature)
            self.adverts[advert.client_id] = advert
        if self.adverts.get(self.client_id) is None or self.adverts[self.client_id].mask_public_key != keys.public_bytes(self.mask_key):
            raise VerificationFailed("the aggregator did not relay this client's own keys faithfully")
        ids = sorted(self.adverts)
        if len(ids) < self.min_participants:
            raise VerificationFailed(f"refusing a round of {len(ids)} participants: the federation requires at least "
                                     f"{self.min_participants}")
        degree, threshold = choose_params(len(ids), self.config.dropout_fraction, self.config.corrupt_fraction)
        if (participants.degree, participants.threshold) != (degree, threshold):
            raise VerificationFailed("the aggregator's graph parameters differ from the ones this client computes")
        self.graph = neighbours(ids, degree, graph_seed(self.round_id, ids))
        self.threshold = threshold

    def _position(self, client_id: str) -> int:
        return sorted(self.adverts).index(client_id) + 1

    def share_keys(self) -> aggregator_pb2.ShareKeysRequest:
        """Shamir-share the self-mask seed and the mask private key among the neighbours, each
        share pair encrypted for its recipient."""
        mine = self.graph[self.client_id]
        xs = [self._position(v) for v in mine]
        seed_shares = shamir.split(self.self_seed, xs, self.threshold)
        key_shares = shamir.split(keys.private_bytes(self.mask_key), xs, self.threshold)
        request = aggregator_pb2.ShareKeysRequest(round_id=self.round_id, client_id=self.client_id)
        for recipient, x in zip(mine, xs):
            channel_key = keys.derive(self.cipher_key, self.adverts[recipient].cipher_public_key,
                                      keys.SHARE_KEY_LABEL, self.round_id, self.client_id, recipient)
            sealed = keys.seal_share(channel_key, seed_shares[x] + key_shares[x], self.round_id, self.client_id, recipient)
            request.shares.add(sender=self.client_id, recipient=recipient, ciphertext=sealed)
        sign_stage_message(request, self.identity.sign)
        return request

    def accept_shares(self, incoming: aggregator_pb2.IncomingShares) -> None:
        self.shared = set(incoming.shared)
        if not self.shared <= set(self.adverts) or self.client_id not in self.shared:
            raise VerificationFailed("the set of clients that shared keys is not a subset of the participants")
        for share in incoming.shares:
            if share.recipient != self.client_id or share.sender not in self.graph[self.client_id]:
                raise VerificationFailed(f"unexpected share from {share.sender!r:.60}")
            channel_key = keys.derive(self.cipher_key, self.adverts[share.sender].cipher_public_key,
                                      keys.SHARE_KEY_LABEL, self.round_id, share.sender, self.client_id)
            plain = keys.open_share(channel_key, share.ciphertext, self.round_id, share.sender, self.client_id)
            self.held[share.sender] = (plain[:shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES:])

    def masked_input(self, vector: np.ndarray, weight: float) -> np.ndarray:
        """encode(w·x, w) + PRG(self seed) + Σ ± PRG(pairwise seed) over neighbours that shared keys."""
        return self.mask(self.encoding.encode(vector, weight))

    def mask(self, encoded: np.ndarray) -> np.ndarray:
        masked = encoded.copy()
        count, dtype = masked.size, masked.dtype
        masked += expand(self.self_seed, count, dtype)
        for peer in self.graph[self.client_id]:
            if peer not in self.shared:
                continue
            seed = keys.derive(self.mask_key, self.adverts[peer].mask_public_key, keys.MASK_SEED_LABEL,
                               self.round_id, self.client_id, peer)
            mask = expand(seed, count, dtype)
            if self.client_id < peer:
                masked += mask
            else:
                masked -= mask
        return masked

    def unmask(self, request: aggregator_pb2.UnmaskRequest) -> aggregator_pb2.UnmaskResponse:
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise InvalidInput("refusing to unmask: a client is listed both as survivor and as dropped")
        if not (survivors | dropped) <= self.shared:
            raise InvalidInput("refusing to unmask: the request names clients that did not share keys")
        if len(survivors) < self.threshold:
            raise InvalidInput(f"refusing to unmask: {len(survivors)} survivors is below the threshold {self.threshold}")
        response = aggregator_pb2.UnmaskResponse(round_id=self.round_id, client_id=self.client_id)
        for owner, (seed_share, key_share) in sorted(self.held.items()):
            if owner in survivors:
                response.seed_shares.add(owner=owner, share=seed_share)
            elif owner in dropped:
                response.key_shares.add(owner=owner, share=key_share)
        sign_stage_message(response, self.identity.sign)
        return response


def run_round(stub, call: Callable, participant: SecAggParticipant, vector: np.ndarray, weight: float,
              submit: Callable[[np.ndarray], None], drop_at: str | None = None, stage_timeout: float = 3600) -> None:
    """Drive the four stages against the aggregator (blocking). `drop_at` stops the client
    just before that stage, to simulate a dropout."""
    request = aggregator_pb2.StageRequest(round_id=participant.round_id, client_id=participant.client_id)

    def reached(stage: str) -> None:
        if drop_at == stage:
            raise SimulatedDropout(stage)

    def timed(stage: str, compute: Callable, *args):
        started = time.perf_counter()
        result = compute(*args)
        participant.stage_seconds[stage] = participant.stage_seconds.get(stage, 0.0) + time.perf_counter() - started
        return result

    reached(ADVERTISE)
    call(stub.AdvertiseKeys, timed(ADVERTISE, participant.advertisement))
    participant.accept_participants(call(stub.AwaitParticipants, request, timeout=stage_timeout))
    reached(SHARE)
    call(stub.ShareKeys, timed(SHARE, participant.share_keys))
    shares = call(stub.AwaitShares, request, timeout=stage_timeout)
    timed(SHARE, participant.accept_shares, shares)
    reached(MASKED)
    submit(timed(MASKED, participant.masked_input, vector, weight))
    unmask_request = call(stub.AwaitUnmask, request, timeout=stage_timeout)
    reached(UNMASK)
    call(stub.Unmask, timed(UNMASK, participant.unmask, unmask_request))
