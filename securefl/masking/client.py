"""A client's side of one SecAgg+ round, written for an aggregator that lies.

The aggregator relays every message, so it can show each client a different participant list,
a different set of key sharers, a different survivor set, and send any unmask request it likes;
up to T clients may collude with it. Following the active-adversary version of Bonawitz et al.
(CCS 2017, §4) on the sparse graph of Bell et al. (CCS 2020), an honest client i keeps these
rules (k neighbours N(i), Shamir threshold t, n participants in its view):

R1  Parameters come from its federation file, never from the aggregator (`policy`): the
    encoding, the corrupt fraction, the minimum participants and the threshold rule; (k, t) is
    accepted only if at least as strong. Advertisements must carry valid roster signatures
    for this round, with distinct keys, and its own keys relayed faithfully.
R2  Shares are dealt to N(i) under a digest V of the participant view, with commitments
    (`statements`): a view, a round or a holder other than the intended one gets nothing.
R3  It sends a masked input only if at least t of its neighbours shared keys with it (every
    share present and matching its commitment), and first signs its mask set M(i): the
    neighbours whose pairwise masks its input carries.
R4  It signs one survivor set S per round (the consistency stage), only after sending its
    input, and only if i ∈ S, S is within the clients it saw share keys, and at least t of its
    neighbours and at least `min_participants` clients are in S.
R5  It answers at most one unmask request per round, only for exactly the set S it signed, and
    only if the request carries valid signatures on (round, V, S) from a quorum Q of the n
    participants, at least t of them its neighbours, where Q > (n + C)/2 and
    C = max(t - 1, ⌈γn⌉) ≥ T (`policy.confirmation_quorum`).
R6  For an owner o ∈ S it reveals the self-mask seed share, and only if o's signed mask set
    names i; for an owner that shared keys but is not in S, the mask-key share. Never both
    kinds for one owner.

Why no input is exposed (T ≤ C colluders, each client with fewer than t colluding neighbours):

1. At most one survivor set per view is ever answered: two sets with quorums Q share more than
   C ≥ T signers, so an honest client would have signed both, which R4 forbids.
2. So for every owner o, honest holders reveal either only seed shares (o ∈ S) or only key
   shares (o ∉ S), never both (R6, with R2 tying every share to one view). Colluders hold
   fewer than t shares of each, so the aggregator never rebuilds both secrets of anyone.
3. Suppose the aggregator rebuilds o's self-mask seed. Then some honest holder j revealed a
   seed share of o: j ∈ S (R4), o ∈ S, and o's signed mask set names j (R6), so o's input
   carries the pairwise mask of (o, j), and j's carries it with the opposite sign (j masked
   with o since o is its neighbour within the sharers it saw, R3/R4). That mask's seed follows
   only from o's or j's mask key; both are in S, so by 2. neither key is rebuilt. Any
   combination of masked inputs free of unknown masks therefore weighs o and j alike: x_o is
   learnt only summed with x_j, and with every honest holder that revealed o's seed share (at
   least t minus o's colluding neighbours of them).

The aggregator's alternatives all fail at a rule: too few sharers (R3), an inconsistent or
replayed survivor set (R5: signatures bind round, view and set), a request listing i as
dropped or a second request (R5), weaker parameters (R1). Dropouts still recover: a client
that vanishes after any stage is either outside S (its mask key is rebuilt) or in S (its seed
is rebuilt).

A client round can also be exported between stages and resumed (`SecAggClientState`), for
transports that keep no client process alive between messages (Flower). Everything the rules
above remember travels with it (the view, the shares dealt and held, the mask set, the signed
survivor set, the answered request), so a resumed round keeps them; the state holds the round's
secrets, so such a transport seals it (`securefl.rounds.sealed`). Such a transport `begin`s a
round without the update and `provide`s it at the masked-input stage: the update is never in
an exported state, and one masked input is sent per round."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, VerificationFailed
from ..federation import Federation, SecurityParameters
from ..identity import Identity, Roster
from ..prg import SEED_BYTES, apply_masks
from ..quantize import FixedPoint, check_payload
from ..rounds.chunks import split_array
from ..rounds.scheme import SUBMIT, Protected, Stage, decode
from ..v1 import aggregator_pb2, secagg_pb2, suspended_pb2
from . import keys, shamir
from .policy import check_config, check_graph
from .server import ADVERTISE, CONFIRM, MASK_SET, MASKED_CHUNK_VALUES, SECAGG, SHARE, UNMASK
from .statements import (
    KEY_SHARE, SEED_SHARE, mask_set_message, self_seed_commitment, share_associated_data, share_commitment,
    sign_stage_message, survivors_message,
)
from .view import RoundView

PUBLIC_KEY_BYTES = 32


def _refuse(message: str) -> VerificationFailed:
    return VerificationFailed(f"refusing to continue the round: {message}")


def _unique(ids, what: str) -> frozenset[str]:
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise _refuse(f"{what} lists a client twice")
    return frozenset(ids)


@dataclass
class SecAggParticipant:
    """State of one client in one round: its round secrets, its view, what it committed to."""

    identity: Identity
    roster: Roster
    config: secagg_pb2.SecAggConfig  # the aggregator's, already checked against `security`
    security: SecurityParameters  # the federation file's
    round_id: str
    cipher_key: object = field(default_factory=keys.new_private_key, repr=False)
    mask_key: object = field(default_factory=keys.new_private_key, repr=False)
    self_seed: bytes = field(default_factory=lambda: os.urandom(SEED_BYTES), repr=False)
    view: RoundView | None = None
    shared: frozenset[str] = frozenset()
    masked_with: frozenset[str] | None = None
    held: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)  # owner -> (seed share, key share)
    submitted: bool = False
    confirmed: frozenset[str] | None = None
    _share_message: secagg_pb2.ShareKeysRequest | None = field(default=None, repr=False)
    _mask_set: secagg_pb2.MaskSet | None = None
    _answered: tuple[bytes, secagg_pb2.UnmaskResponse] | None = field(default=None, repr=False)
    _channel_keys: dict[str, bytes] = field(default_factory=dict, repr=False)  # derived again after a restore

    @property
    def client_id(self) -> str:
        return self.identity.client_id

    @property
    def encoding(self) -> FixedPoint:
        return FixedPoint(self.config.bits, self.config.frac_bits, self.config.value_bound, self.config.max_weight)

    def _view(self) -> RoundView:
        if self.view is None:
            raise _refuse("the stage comes before the participant list")
        return self.view

    # -- advertise and share keys ------------------------------------------------------------

    def advertisement(self) -> secagg_pb2.KeyAdvertisement:
        cipher_public, mask_public = keys.public_bytes(self.cipher_key), keys.public_bytes(self.mask_key)
        return secagg_pb2.KeyAdvertisement(
            round_id=self.round_id, client_id=self.client_id, cipher_public_key=cipher_public,
            mask_public_key=mask_public, signature=self.identity.sign(
                keys.advertisement_message(self.round_id, self.client_id, cipher_public, mask_public)),
        )

    def accept_participants(self, participants: secagg_pb2.Participants) -> None:
        """R1: check every advertisement and the graph parameters, and fix this round's view."""
        adverts: dict[str, secagg_pb2.KeyAdvertisement] = {}
        for advert in participants.clients:
            if advert.round_id != self.round_id:
                raise VerificationFailed("an advertisement belongs to another round")
            if len(advert.cipher_public_key) != PUBLIC_KEY_BYTES or len(advert.mask_public_key) != PUBLIC_KEY_BYTES:
                raise _refuse(f"the advertised keys of {advert.client_id!r:.60} are not X25519 public keys")
            self.roster.verify(advert.client_id, keys.advertisement_message(
                advert.round_id, advert.client_id, advert.cipher_public_key, advert.mask_public_key), advert.signature)
            if advert.client_id in adverts:
                raise _refuse(f"the participant list names {advert.client_id} twice")
            adverts[advert.client_id] = advert
        public_keys = [k for a in adverts.values() for k in (a.cipher_public_key, a.mask_public_key)]
        if len(set(public_keys)) != len(public_keys):
            raise _refuse("two advertised round keys are equal")
        own = adverts.get(self.client_id)
        if own is None or (own.cipher_public_key, own.mask_public_key) != (
                keys.public_bytes(self.cipher_key), keys.public_bytes(self.mask_key)):
            raise VerificationFailed("the aggregator did not relay this client's own keys faithfully")
        check_graph(self.security, len(adverts), participants.degree, participants.threshold)
        view = RoundView(self.round_id, adverts, participants.degree, participants.threshold,
                         self.config.corrupt_fraction)
        if self.view is not None and self.view.digest != view.digest:
            raise _refuse("the aggregator sent a second, different participant list")
        self.view = view

    def share_keys(self) -> secagg_pb2.ShareKeysRequest:
        """R2: Shamir-share the self-mask seed and the mask private key among the neighbours,
        each pair of shares committed to and encrypted for its holder. Asked again, the same
        message (never a second set of shares)."""
        if self._share_message is not None:
            return self._share_message
        view = self._view()
        mine = view.graph[self.client_id]
        xs = [view.positions[v] for v in mine]
        seed_shares = shamir.split(self.self_seed, xs, view.threshold)
        key_shares = shamir.split(keys.private_bytes(self.mask_key), xs, view.threshold)
        request = secagg_pb2.ShareKeysRequest(
            round_id=self.round_id, client_id=self.client_id,
            self_seed_commitment=self_seed_commitment(self.round_id, view.digest, self.client_id, self.self_seed))
        for holder, x in zip(mine, xs):
            share = request.shares.add(
                sender=self.client_id, recipient=holder,
                seed_commitment=share_commitment(SEED_SHARE, self.round_id, view.digest, self.client_id, holder,
                                                 seed_shares[x]),
                key_commitment=share_commitment(KEY_SHARE, self.round_id, view.digest, self.client_id, holder,
                                                key_shares[x]))
            share.ciphertext = keys.seal_share(self._channel_key(holder), seed_shares[x] + key_shares[x],
                                               share_associated_data(self.round_id, view.digest, share))
        sign_stage_message(request, self.identity.sign)
        self._share_message = request
        return request

    def _channel_key(self, peer: str) -> bytes:
        """The AES-GCM key of the shares this client and `peer` deal each other (one per pair)."""
        if peer not in self._channel_keys:
            self._channel_keys[peer] = keys.derive(self.cipher_key, self._view().adverts[peer].cipher_public_key,
                                                   keys.SHARE_KEY_LABEL, self.round_id, self.client_id, peer)
        return self._channel_keys[peer]

    # -- masked input --------------------------------------------------------------------

    def accept_shares(self, incoming: secagg_pb2.IncomingShares) -> secagg_pb2.MaskSet:
        """R3: take the shares of the neighbours that shared keys, check each against its
        commitment, and state (signed) which neighbours this client will mask against."""
        view = self._view()
        if self._mask_set is not None:
            return self._mask_set
        shared = _unique(incoming.shared, "the set of key sharers")
        if self.client_id not in shared or not shared <= set(view.adverts):
            raise _refuse("the set of clients that shared keys is not a subset of the participants including this one")
        if len(shared) < self.config.min_participants:
            raise _refuse(f"only {len(shared)} clients shared keys; at least {self.config.min_participants} are needed")
        sharers = view.neighbours_in(self.client_id, shared)
        if len(sharers) < view.threshold:
            raise _refuse(f"only {len(sharers)} of this client's {view.degree} neighbours shared keys; it sends a "
                          f"masked input only when at least t = {view.threshold} did")
        senders = [s.sender for s in incoming.shares]
        if sorted(senders) != sorted(sharers) or any(s.recipient != self.client_id for s in incoming.shares):
            raise _refuse("the incoming shares are not exactly one from each neighbour that shared keys")
        held = {share.sender: self._open(view, share) for share in incoming.shares}
        self.shared, self.held, self.masked_with = shared, held, frozenset(sharers)
        mask_set = secagg_pb2.MaskSet(round_id=self.round_id, client_id=self.client_id, masked_with=sorted(sharers))
        mask_set.signature = self.identity.sign(mask_set_message(self.round_id, view.digest, self.client_id, sharers))
        self._mask_set = mask_set
        return mask_set

    def _open(self, view: RoundView, share: secagg_pb2.EncryptedShare) -> tuple[bytes, bytes]:
        plain = keys.open_share(self._channel_key(share.sender), share.ciphertext,
                                share_associated_data(self.round_id, view.digest, share), share.sender)
        seed_share, key_share = plain[:shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES:]
        expected = (share_commitment(SEED_SHARE, self.round_id, view.digest, share.sender, self.client_id, seed_share),
                    share_commitment(KEY_SHARE, self.round_id, view.digest, share.sender, self.client_id, key_share))
        if len(plain) != 2 * shamir.SHARE_BYTES or expected != (share.seed_commitment, share.key_commitment):
            raise VerificationFailed(f"client {share.sender} dealt a share that does not match its own commitment")
        return seed_share, key_share

    def masked_input(self, vector: np.ndarray, weight: float) -> np.ndarray:
        """encode(w·x, w) + PRG(self seed) + Σ ± PRG(pairwise seed) over the stated mask set."""
        if self.masked_with is None:
            raise _refuse("the masked input comes before the incoming shares")
        view = self._view()
        masked = self.encoding.encode(vector, weight)
        added, subtracted = [self.self_seed], []
        for peer in sorted(self.masked_with):
            seed = keys.derive(self.mask_key, view.adverts[peer].mask_public_key, keys.MASK_SEED_LABEL,
                               self.round_id, self.client_id, peer)
            (added if self.client_id < peer else subtracted).append(seed)
        apply_masks(masked, added, subtracted)
        self.submitted = True
        return masked

    # -- consistency and unmasking -------------------------------------------------------------

    def confirm(self, survivor_set: secagg_pb2.SurvivorSet) -> secagg_pb2.SurvivorConfirmation:
        """R4: sign the survivor set the aggregator claims, once per round."""
        view = self._view()
        survivors = _unique(survivor_set.survivors, "the survivor set")
        if not self.submitted:
            raise _refuse("asked to confirm survivors before this client sent its masked input")
        if self.client_id not in survivors:
            raise _refuse("the survivor set lists this client, which sent its masked input, as dropped")
        if not survivors <= self.shared:
            raise _refuse("the survivor set names clients that did not share keys")
        needed = max(self.config.min_participants, view.quorum)
        if len(survivors) < needed:
            raise _refuse(f"only {len(survivors)} survivors; a survivor set needs at least {needed}")
        alive = view.neighbours_in(self.client_id, survivors)
        if len(alive) < view.threshold:
            raise _refuse(f"only {len(alive)} of this client's neighbours survived; t = {view.threshold} are needed")
        if self.confirmed is not None and self.confirmed != survivors:
            raise _refuse("this client already confirmed a different survivor set in this round")
        self.confirmed = survivors
        return secagg_pb2.SurvivorConfirmation(
            round_id=self.round_id, client_id=self.client_id,
            signature=self.identity.sign(survivors_message(self.round_id, view.digest, self.client_id, survivors)))

    def unmask(self, request: secagg_pb2.UnmaskRequest) -> secagg_pb2.UnmaskResponse:
        """R5 and R6: reveal this client's shares of the survivors' seeds and of the dropped
        clients' mask keys, once, for the survivor set it confirmed and a quorum signed."""
        view = self._view()
        survivors = _unique(request.survivors, "the unmask request")
        if self.client_id not in survivors:
            raise _refuse("the unmask request lists this client as dropped")
        if self.confirmed is None:
            raise _refuse("asked to unmask before this client confirmed a survivor set")
        if survivors != self.confirmed:
            raise _refuse("the unmask request's survivor set differs from the one this client confirmed")
        canonical = request.SerializeToString(deterministic=True)
        if self._answered is not None:
            if self._answered[0] != canonical:
                raise _refuse("this client already answered a different unmask request in this round")
            return self._answered[1]
        self._check_confirmations(view, survivors, request.confirmations)
        self._check_mask_sets(view, survivors, request.mask_sets)
        # One answer per round, for one set: so for each owner one kind of share, ever (R6).
        response = secagg_pb2.UnmaskResponse(round_id=self.round_id, client_id=self.client_id)
        for owner, (seed_share, key_share) in sorted(self.held.items()):
            if owner in survivors:
                response.seed_shares.add(owner=owner, share=seed_share)
            else:
                response.key_shares.add(owner=owner, share=key_share)
        sign_stage_message(response, self.identity.sign)
        self._answered = (canonical, response)
        return response

    def _check_confirmations(self, view: RoundView, survivors: frozenset[str],
                             confirmations: list[secagg_pb2.SurvivorConfirmation]) -> None:
        signers = _unique((c.client_id for c in confirmations), "the survivor confirmations")
        if not signers <= survivors:
            raise _refuse("a survivor confirmation comes from a client outside the survivor set")
        for confirmation in confirmations:
            if confirmation.round_id != self.round_id:
                raise _refuse(f"the confirmation of {confirmation.client_id} belongs to another round")
            self.roster.verify(confirmation.client_id, survivors_message(
                self.round_id, view.digest, confirmation.client_id, survivors), confirmation.signature)
        if len(signers) < view.quorum:
            raise _refuse(f"only {len(signers)} of the {view.size} participants confirmed this survivor set; "
                          f"{view.quorum} are needed")
        neighbours = view.neighbours_in(self.client_id, signers)
        if len(neighbours) < view.threshold:
            raise _refuse(f"only {len(neighbours)} of this client's neighbours confirmed this survivor set; "
                          f"t = {view.threshold} are needed")

    def _check_mask_sets(self, view: RoundView, survivors: frozenset[str], mask_sets: list[secagg_pb2.MaskSet]) -> None:
        by_owner = {m.client_id: m for m in mask_sets}
        for owner in sorted(survivors.intersection(self.held)):
            mask_set = by_owner.get(owner)
            if mask_set is None or mask_set.round_id != self.round_id:
                raise _refuse(f"the unmask request lacks the mask set of survivor {owner}")
            self.roster.verify(owner, mask_set_message(self.round_id, view.digest, owner, mask_set.masked_with),
                               mask_set.signature)
            if self.client_id not in mask_set.masked_with:
                raise _refuse(f"survivor {owner} did not mask against this client, so its seed share stays hidden")


    # -- kept outside the process between stages -------------------------------------------

    def export(self) -> suspended_pb2.SecAggClientState:
        state = suspended_pb2.SecAggClientState(
            round_id=self.round_id, cipher_private_key=keys.private_bytes(self.cipher_key),
            mask_private_key=keys.private_bytes(self.mask_key), self_seed=self.self_seed,
            shared=sorted(self.shared), submitted=self.submitted)
        if self.view is not None:
            state.view.CopyFrom(self.view.participants())
        if self.masked_with is not None:
            state.has_mask_set, state.masked_with[:] = True, sorted(self.masked_with)
        if self.confirmed is not None:
            state.has_confirmed, state.confirmed[:] = True, sorted(self.confirmed)
        for owner, (seed_share, key_share) in sorted(self.held.items()):
            state.held.add(owner=owner, seed_share=seed_share, key_share=key_share)
        if self._share_message is not None:
            state.share_message.CopyFrom(self._share_message)
        if self._mask_set is not None:
            state.mask_set.CopyFrom(self._mask_set)
        if self._answered is not None:
            state.answered_request, _ = self._answered
            state.answered_response.CopyFrom(self._answered[1])
        return state

    @classmethod
    def restore(cls, identity: Identity, roster: Roster, config: secagg_pb2.SecAggConfig,
                security: SecurityParameters, state: suspended_pb2.SecAggClientState) -> SecAggParticipant:
        """The participant `export` described. The state comes from this client's own sealed
        store, so it is trusted: the view in it was checked when it arrived."""
        view = None
        if state.HasField("view"):
            view = RoundView(state.round_id, {a.client_id: a for a in state.view.clients}, state.view.degree,
                             state.view.threshold, config.corrupt_fraction)
        return cls(identity, roster, config, security, state.round_id,
                   cipher_key=keys.private_key(state.cipher_private_key),
                   mask_key=keys.private_key(state.mask_private_key), self_seed=state.self_seed, view=view,
                   shared=frozenset(state.shared),
                   masked_with=frozenset(state.masked_with) if state.has_mask_set else None,
                   held={h.owner: (h.seed_share, h.key_share) for h in state.held}, submitted=state.submitted,
                   confirmed=frozenset(state.confirmed) if state.has_confirmed else None,
                   _share_message=state.share_message if state.HasField("share_message") else None,
                   _mask_set=state.mask_set if state.HasField("mask_set") else None,
                   _answered=(state.answered_request, state.answered_response) if state.answered_request else None)


class SecAggClientRound:
    """Answers the aggregator's stages for one round; the masked input is the SUBMIT stage."""

    def __init__(self, participant: SecAggParticipant, vector: np.ndarray | None, weight: float = 0.0,
                 chunk_values: int = MASKED_CHUNK_VALUES) -> None:
        """`vector` None: a round begun without its update (`provide` gives it)."""
        self.participant = participant
        self._vector = vector
        self._weight = weight
        self._chunk_values = chunk_values  # the aggregator's (Session.chunk_values)

    def answer(self, stage: Stage) -> bytes:
        participant = self.participant
        if stage.name == ADVERTISE:
            reply = participant.advertisement()
        elif stage.name == SHARE:
            participant.accept_participants(decode(secagg_pb2.Participants, stage.body, "the participant list"))
            reply = participant.share_keys()
        elif stage.name == MASK_SET:
            reply = participant.accept_shares(decode(secagg_pb2.IncomingShares, stage.body, "the incoming shares"))
        elif stage.name == CONFIRM:
            reply = participant.confirm(decode(secagg_pb2.SurvivorSet, stage.body, "the survivor set"))
        elif stage.name == UNMASK:
            reply = participant.unmask(decode(secagg_pb2.UnmaskRequest, stage.body, "the unmask request"))
        else:
            raise InvalidInput(f"secure aggregation has no stage {stage.name!r:.40}")
        return reply.SerializeToString()

    def provide(self, vector: np.ndarray, weight: float) -> None:
        if self._vector is not None or self.participant.submitted:
            raise InvalidInput(f"round {self.participant.round_id} already has its update")
        self._vector, self._weight = vector, weight

    def protect(self, stage: Stage) -> Protected:
        if stage.name != SUBMIT:
            raise InvalidInput(f"the masked input is sent in stage {SUBMIT}, not {stage.name!r:.40}")
        if self.participant.submitted:
            raise _refuse("this client already sent its masked input in this round")
        if self._vector is None:
            raise InvalidInput(f"round {self.participant.round_id} has no update to mask")
        masked = self.participant.masked_input(self._vector, self._weight)
        self._vector = None
        return Protected(split_array(masked, self._chunk_values), masked.size)

    def export(self) -> bytes:
        """This round's state (secret), for `SecAggClient.resume`; never with an update in it."""
        if self._vector is not None:
            raise InvalidInput("a round holding its update is not exported: begin it, and provide the update "
                               "at the masked-input stage")
        return self.participant.export().SerializeToString()


class SecAggClient:
    name = SECAGG
    interactive = True

    def __init__(self, session: aggregator_pb2.Session, identity: Identity, federation: Federation) -> None:
        """Refuses (VerificationFailed) an aggregator whose parameters are weaker than the
        federation file's."""
        check_config(federation.security, session.secagg, len(federation.roster))
        self._config = session.secagg
        self._chunk_values = session.chunk_values or MASKED_CHUNK_VALUES
        self._security = federation.security
        self._identity = identity
        self._roster = federation.roster

    def check(self, vector: np.ndarray, weight: float) -> None:
        check_payload(vector, weight, self._config.max_weight)

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> SecAggClientRound:
        return SecAggClientRound(self._participant(round_id), vector, weight, self._chunk_values)

    def begin(self, round_id: str) -> SecAggClientRound:
        """A round whose update comes at the masked-input stage (`SecAggClientRound.provide`)."""
        return SecAggClientRound(self._participant(round_id), None, chunk_values=self._chunk_values)

    def resume(self, round_id: str, exported: bytes) -> SecAggClientRound:
        """The client round `SecAggClientRound.export` wrote, for round `round_id`."""
        state = suspended_pb2.SecAggClientState.FromString(exported)
        if state.round_id != round_id:
            raise InvalidInput(f"the kept state belongs to round {state.round_id!r:.70}, not {round_id!r:.70}")
        return SecAggClientRound(SecAggParticipant.restore(self._identity, self._roster, self._config,
                                                           self._security, state), None,
                                 chunk_values=self._chunk_values)

    def _participant(self, round_id: str) -> SecAggParticipant:
        return SecAggParticipant(self._identity, self._roster, self._config, self._security, round_id)
