"""A client's side of one SecAgg+ round.

The client checks everything the untrusted aggregator relays: advertisements carry valid
identity signatures of enrolled clients (the roster is pinned, not taken from the
aggregator), the graph parameters are the ones it computes itself, shares decrypt under keys
bound to this round and these two clients, and an unmask request is refused when its
survivor and dropped sets overlap, contain strangers, or leave fewer survivors than the
threshold. It reveals, for each neighbour, at most one of its two secrets, and answers each
stage of a round at most once (a second unmask request with other sets could otherwise make it
reveal both secrets of one neighbour; a second masked input under other masks could reveal
the difference).

Between stages, a client round can be exported and resumed (`SecAggClientState`), for
transports that keep no client process alive between messages; the state holds the round's
secrets, so such a transport seals it (`securefl.rounds.sealed`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, VerificationFailed
from ..identity import Identity, Roster
from ..quantize import FixedPoint
from ..rounds.scheme import Protected, Stage, decode
from ..v1 import aggregator_pb2, secagg_pb2, suspended_pb2
from . import keys, shamir
from .graph import choose_params, graph_seed, neighbours
from .prg import SEED_BYTES, expand
from .server import ADVERTISE, MASKED, MASKED_CHUNK_VALUES, SECAGG, SHARE, UNMASK, sign_stage_message


@dataclass
class SecAggParticipant:
    """State of one client in one round: its round keys, its graph, the shares it holds."""

    identity: Identity
    roster: Roster
    config: secagg_pb2.SecAggConfig
    round_id: str
    cipher_key: object = field(default_factory=keys.new_private_key, repr=False)
    mask_key: object = field(default_factory=keys.new_private_key, repr=False)
    self_seed: bytes = field(default_factory=lambda: os.urandom(SEED_BYTES), repr=False)
    adverts: dict[str, secagg_pb2.KeyAdvertisement] = field(default_factory=dict)
    graph: dict[str, list[str]] = field(default_factory=dict)
    threshold: int = 0
    shared: set[str] = field(default_factory=set)
    held: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)  # owner -> (seed share, key share)

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    @property
    def encoding(self) -> FixedPoint:
        return FixedPoint(self.config.bits, self.config.frac_bits, self.config.value_bound, self.config.max_weight)

    def advertisement(self) -> secagg_pb2.KeyAdvertisement:
        cipher_public, mask_public = keys.public_bytes(self.cipher_key), keys.public_bytes(self.mask_key)
        return secagg_pb2.KeyAdvertisement(
            round_id=self.round_id, client_id=self.client_id, cipher_public_key=cipher_public,
            mask_public_key=mask_public, signature=self.identity.sign(
                keys.advertisement_message(self.round_id, self.client_id, cipher_public, mask_public)),
        )

    def accept_participants(self, participants: secagg_pb2.Participants) -> None:
        for advert in participants.clients:
            if advert.round_id != self.round_id:
                raise VerificationFailed("an advertisement belongs to another round")
            self.roster.verify(advert.client_id, keys.advertisement_message(
                advert.round_id, advert.client_id, advert.cipher_public_key, advert.mask_public_key), advert.signature)
            self.adverts[advert.client_id] = advert
        if self.adverts.get(self.client_id) is None or self.adverts[self.client_id].mask_public_key != keys.public_bytes(self.mask_key):
            raise VerificationFailed("the aggregator did not relay this client's own keys faithfully")
        degree = self._build_graph()
        if (participants.degree, participants.threshold) != (degree, self.threshold):
            raise VerificationFailed("the aggregator's graph parameters differ from the ones this client computes")

    def _build_graph(self) -> int:
        """The neighbour graph and threshold this client computes itself from the participants;
        returns the degree."""
        ids = sorted(self.adverts)
        degree, self.threshold = choose_params(len(ids), self.config.dropout_fraction, self.config.corrupt_fraction)
        self.graph = neighbours(ids, degree, graph_seed(self.round_id, ids))
        return degree

    def _position(self, client_id: str) -> int:
        return sorted(self.adverts).index(client_id) + 1

    def share_keys(self) -> secagg_pb2.ShareKeysRequest:
        """Shamir-share the self-mask seed and the mask private key among the neighbours, each
        share pair encrypted for its recipient."""
        mine = self.graph[self.client_id]
        xs = [self._position(v) for v in mine]
        seed_shares = shamir.split(self.self_seed, xs, self.threshold)
        key_shares = shamir.split(keys.private_bytes(self.mask_key), xs, self.threshold)
        request = secagg_pb2.ShareKeysRequest(round_id=self.round_id, client_id=self.client_id)
        for recipient, x in zip(mine, xs):
            channel_key = keys.derive(self.cipher_key, self.adverts[recipient].cipher_public_key,
                                      keys.SHARE_KEY_LABEL, self.round_id, self.client_id, recipient)
            sealed = keys.seal_share(channel_key, seed_shares[x] + key_shares[x], self.round_id, self.client_id, recipient)
            request.shares.add(sender=self.client_id, recipient=recipient, ciphertext=sealed)
        sign_stage_message(request, self.identity.sign)
        return request

    def accept_shares(self, incoming: secagg_pb2.IncomingShares) -> None:
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

    def mask(self, encoded: np.ndarray) -> np.ndarray:
        """encoded + PRG(self seed) + Σ ± PRG(pairwise seed) over neighbours that shared keys."""
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

    def unmask(self, request: secagg_pb2.UnmaskRequest) -> secagg_pb2.UnmaskResponse:
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise InvalidInput("refusing to unmask: a client is listed both as survivor and as dropped")
        if not (survivors | dropped) <= self.shared:
            raise InvalidInput("refusing to unmask: the request names clients that did not share keys")
        if len(survivors) < self.threshold:
            raise InvalidInput(f"refusing to unmask: {len(survivors)} survivors is below the threshold {self.threshold}")
        response = secagg_pb2.UnmaskResponse(round_id=self.round_id, client_id=self.client_id)
        for owner, (seed_share, key_share) in sorted(self.held.items()):
            if owner in survivors:
                response.seed_shares.add(owner=owner, share=seed_share)
            elif owner in dropped:
                response.key_shares.add(owner=owner, share=key_share)
        sign_stage_message(response, self.identity.sign)
        return response

    def export(self) -> suspended_pb2.SecAggClientState:
        state = suspended_pb2.SecAggClientState(
            round_id=self.round_id, cipher_private_key=keys.private_bytes(self.cipher_key),
            mask_private_key=keys.private_bytes(self.mask_key), self_seed=self.self_seed,
            adverts=[self.adverts[cid] for cid in sorted(self.adverts)], shared=sorted(self.shared))
        for owner, (seed_share, key_share) in sorted(self.held.items()):
            state.held.add(owner=owner, seed_share=seed_share, key_share=key_share)
        return state

    @classmethod
    def restore(cls, identity: Identity, roster: Roster, config: secagg_pb2.SecAggConfig,
                state: suspended_pb2.SecAggClientState) -> SecAggParticipant:
        """The participant `export` described. The state comes from this client's own sealed
        store, so it is trusted; the adverts in it were verified when they arrived."""
        participant = cls(identity, roster, config, state.round_id,
                          cipher_key=keys.load_private_key(state.cipher_private_key),
                          mask_key=keys.load_private_key(state.mask_private_key), self_seed=state.self_seed,
                          adverts={a.client_id: a for a in state.adverts}, shared=set(state.shared),
                          held={h.owner: (h.seed_share, h.key_share) for h in state.held})
        if participant.adverts:
            participant._build_graph()
        return participant


class SecAggClientRound:
    """Answers the aggregator's stages for one round, each at most once; the masked input is
    the SUBMIT stage. The update is encoded at once and dropped as soon as it is masked."""

    def __init__(self, participant: SecAggParticipant, encoded: np.ndarray | None,
                 answered: set[str] | None = None) -> None:
        """`encoded`: the fixed-point update (`FixedPoint.encode`), None once it was sent."""
        self.participant = participant
        self._encoded = encoded
        self._answered = answered or set()

    def _once(self, stage: str) -> None:
        if stage in self._answered:
            raise InvalidInput(f"refusing to answer stage {stage!r:.40} a second time in round {self.participant.round_id}")
        self._answered.add(stage)

    def answer(self, stage: Stage) -> bytes:
        self._once(stage.name)
        if stage.name == ADVERTISE:
            reply = self.participant.advertisement()
        elif stage.name == SHARE:
            self.participant.accept_participants(decode(secagg_pb2.Participants, stage.body, "the participant list"))
            reply = self.participant.share_keys()
        elif stage.name == UNMASK:
            reply = self.participant.unmask(decode(secagg_pb2.UnmaskRequest, stage.body, "the unmask request"))
        else:
            raise InvalidInput(f"secure aggregation has no stage {stage.name!r:.40}")
        return reply.SerializeToString()

    def provide(self, vector: np.ndarray, weight: float) -> None:
        if self._encoded is not None or MASKED in self._answered:
            raise InvalidInput(f"round {self.participant.round_id} already has its update")
        self._encoded = self.participant.encoding.encode(vector, weight)

    def protect(self, stage: Stage) -> Protected:
        if self._encoded is None and stage.name not in self._answered:
            raise InvalidInput(f"round {self.participant.round_id} has no update to mask")
        self._once(stage.name)
        self.participant.accept_shares(decode(secagg_pb2.IncomingShares, stage.body, "the incoming shares"))
        masked = self.participant.mask(self._encoded)
        self._encoded = None
        little = masked.astype(masked.dtype.newbyteorder("<"))
        chunks = [little[i:i + MASKED_CHUNK_VALUES].tobytes() for i in range(0, masked.size, MASKED_CHUNK_VALUES)]
        return Protected(chunks, masked.size)

    def export(self) -> bytes:
        """This round's state (secret), for `SecAggClient.resume`."""
        state = self.participant.export()
        state.answered.extend(sorted(self._answered))
        if self._encoded is not None:
            state.encoded_input = self._encoded.astype(self._encoded.dtype.newbyteorder("<")).tobytes()
        return state.SerializeToString()


class SecAggClient:
    name = SECAGG
    interactive = True

    def __init__(self, session: aggregator_pb2.Session, identity: Identity, roster: Roster | None) -> None:
        if roster is None:
            raise VerificationFailed("the secagg scheme needs the roster of enrolled clients pinned (connect(roster=...))")
        self._config = session.secagg
        self._identity = identity
        self._roster = roster

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> SecAggClientRound:
        participant = SecAggParticipant(self._identity, self._roster, self._config, round_id)
        return SecAggClientRound(participant, participant.encoding.encode(vector, weight))

    def begin(self, round_id: str) -> SecAggClientRound:
        """A round whose update comes at the masked-input stage (`SecAggClientRound.provide`)."""
        return SecAggClientRound(SecAggParticipant(self._identity, self._roster, self._config, round_id), None)

    def resume(self, round_id: str, exported: bytes) -> SecAggClientRound:
        """The client round `SecAggClientRound.export` wrote, for round `round_id`."""
        state = suspended_pb2.SecAggClientState.FromString(exported)
        if state.round_id != round_id:
            raise InvalidInput(f"the kept state belongs to round {state.round_id!r:.70}, not {round_id!r:.70}")
        participant = SecAggParticipant.restore(self._identity, self._roster, self._config, state)
        encoded = None
        if state.encoded_input:
            encoded = np.frombuffer(state.encoded_input, participant.encoding.dtype.newbyteorder("<")).astype(
                participant.encoding.dtype)
        return SecAggClientRound(participant, encoded, set(state.answered))
