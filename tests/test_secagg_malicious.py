"""SecAgg+ under attack over real gRPC: a lying aggregator (the real engine and server half
behind a servicer that rewrites what clients are told) against real `securefl.connect`
clients, and cheating clients against the real aggregator process. In each, the test checks
what the honest clients actually sent: nothing that would expose an input, and a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.errors import InvalidInput, ProtocolViolation, VerificationFailed
from securefl.masking.policy import secagg_config
from securefl.masking.server import CONFIRM, MASK_SET, SHARE, UNMASK
from securefl.rounds.engine import Round
from securefl.rounds.scheme import Stage
from securefl.simulation import LocalFederation, SecAggSettings
from securefl.v1 import aggregator_pb2, secagg_pb2
from tests.secagg_attacks import (
    SECURITY, InconsistentSeedDealer, Lie, LyingHolder, MismatchedCommitmentDealer, Sent, cheat, lying_federation,
    refusals, run_all,
)

N = 5  # the complete graph: k = 4, t = 3, confirmation quorum 4


def vectors(n: int = N) -> list[np.ndarray]:
    return [np.full(6, float(i + 1)) for i in range(n)]


def unmask_request(round_: Round, client_id: str, survivors: list[str],
                   confirmations: list[secagg_pb2.SurvivorConfirmation]) -> Stage:
    """An unmask request as the liar builds it: any set, any confirmations, the real mask sets."""
    scheme_round = round_.scheme_round
    owners = set(scheme_round.view.graph[client_id]).intersection(survivors)
    request = secagg_pb2.UnmaskRequest(survivors=survivors, confirmations=confirmations,
                                       mask_sets=[scheme_round.mask_sets[o] for o in sorted(owners)])
    return Stage(UNMASK, request.SerializeToString())


class KeepsConfirmations(Lie):
    """In round `target` (default: every round), shows each client the survivor set
    `shown(client, true set)`, keeps the confirmations from the engine, and asks each confirmer
    to unmask the set it was shown with `confirmations_for(client, set)`."""

    def __init__(self, target: str | None = None) -> None:
        self.target = target
        self.kept: dict[str, tuple[list[str], secagg_pb2.SurvivorConfirmation]] = {}
        self.asked: set[str] = set()

    def targets(self, round_: Round) -> bool:
        return self.target in (None, round_.round_id)

    def shown(self, client_id: str, survivors: list[str]) -> list[str]:
        return survivors

    def confirmations_for(self, client_id: str, survivors: list[str]) -> list[secagg_pb2.SurvivorConfirmation]:
        return [c for shown, c in self.kept.values() if shown == survivors]

    def rewrite(self, client_id: str, stage: Stage, round_: Round) -> Stage:
        if stage.name != CONFIRM or not self.targets(round_):
            return stage
        survivors = list(secagg_pb2.SurvivorSet.FromString(stage.body).survivors)
        return Stage(CONFIRM, secagg_pb2.SurvivorSet(survivors=self.shown(client_id, survivors)).SerializeToString())

    def swallow(self, client_id: str, stage: str, body: bytes, round_: Round) -> bool:
        if stage != CONFIRM or not self.targets(round_):
            return False
        shown = self.shown(client_id, round_.scheme_round.survivors)
        self.kept[client_id] = (shown, secagg_pb2.SurvivorConfirmation.FromString(body))
        return True

    def inject(self, client_id: str, round_: Round, sent: Sent) -> Stage | None:
        if not self.targets(round_) or client_id not in self.kept or client_id in self.asked:
            return None
        if len(self.kept) < len(round_.scheme_round.survivors):
            return None  # wait until everyone confirmed something
        self.asked.add(client_id)
        shown = self.kept[client_id][0]
        return unmask_request(round_, client_id, shown, self.confirmations_for(client_id, shown))


# -- the malicious aggregator ------------------------------------------------------------------


def test_a_client_told_too_few_neighbours_shared_keys_never_sends_its_masked_input():
    class TooFewSharers(Lie):
        def rewrite(self, client_id, stage, round_):
            if client_id != victim or stage.name != MASK_SET:
                return stage
            incoming = secagg_pb2.IncomingShares.FromString(stage.body)
            kept = sorted(s.sender for s in incoming.shares)[:2]  # t - 1 of its neighbours
            lie = secagg_pb2.IncomingShares(shared=sorted([victim, *kept]),
                                            shares=[s for s in incoming.shares if s.sender in kept])
            return Stage(MASK_SET, lie.SerializeToString())

    with lying_federation(N, TooFewSharers()) as fed:
        victim = fed.ids[0]
        outcomes = fed.run("few-sharers", vectors())
        sent = fed.service.sent
    assert isinstance(outcomes[0], VerificationFailed)
    assert "only 2 of this client's 4 neighbours shared keys" in str(outcomes[0])
    assert victim not in sent.submissions and not sent.bodies(MASK_SET, victim)
    assert all(isinstance(o, np.ndarray) for o in outcomes[1:])  # the others finish without it
    assert np.allclose(outcomes[1], np.mean(vectors()[1:], axis=0), atol=1e-3)


def test_clients_shown_different_survivor_sets_reveal_nothing():
    class SplitSurvivors(KeepsConfirmations):
        def shown(self, client_id, survivors):
            left = sorted(survivors)[:3]  # these see the true set, the other two a set without left[0]
            return survivors if client_id in left else [s for s in survivors if s != left[0]]

    with lying_federation(N, SplitSurvivors()) as fed:
        outcomes = fed.run("split", vectors())
        sent = fed.service.sent
    assert not sent.bodies(UNMASK)
    confirmed = {secagg_pb2.SurvivorConfirmation.FromString(b).client_id for b in sent.bodies(CONFIRM)}
    assert len(confirmed) == N  # each signed what it was shown ...
    messages = refusals(outcomes)
    assert len(messages) == N  # ... and none got a quorum of confirmations on its set
    assert all("confirmed this survivor set; 4 are needed" in m for m in messages)


def test_a_client_listed_as_dropped_after_sending_its_input_reveals_nothing_and_its_seed_stays_hidden():
    class DropTheVictim(KeepsConfirmations):
        def shown(self, client_id, survivors):
            return survivors if client_id == victim else [s for s in survivors if s != victim]

        def inject(self, client_id, round_, sent):
            stage = super().inject(client_id, round_, sent)
            if stage is not None and client_id == victim:  # the victim too is asked with the others' set
                others = [s for s in round_.scheme_round.survivors if s != victim]
                return unmask_request(round_, client_id, others, self.confirmations_for(client_id, others))
            return stage

    with lying_federation(N, DropTheVictim()) as fed:
        victim = fed.ids[0]
        outcomes = fed.run("drop-victim", vectors())
        sent = fed.service.sent
    assert victim in sent.submissions  # its masked input arrived ...
    assert "lists this client as dropped" in str(outcomes[0]) and not sent.bodies(UNMASK, victim)
    assert {owner for _, owner in sent.revealed_key_owners()} == {victim}  # ... its mask key was rebuilt ...
    assert victim not in {owner for _, owner in sent.revealed_seed_owners()}  # ... but never its seed


def test_a_client_never_answers_a_second_different_unmask_request():
    class AskTwice(Lie):
        asked = False

        def inject(self, client_id, round_, sent):
            if client_id != target or self.asked or not sent.bodies(UNMASK, client_id):
                return None
            self.asked = True
            scheme_round = round_.scheme_round
            fewer = [scheme_round.confirmations[c] for c in sorted(scheme_round.confirmations)][:-1]
            return unmask_request(round_, client_id, scheme_round.survivors, fewer)

    with lying_federation(N, AskTwice()) as fed:
        target = fed.ids[2]
        outcomes = fed.run("twice", vectors())
        sent = fed.service.sent
    assert len(sent.bodies(UNMASK, target)) == 1
    assert "already answered a different unmask request" in str(outcomes[2])


def _weaker_config(**changes):
    def lie(session: aggregator_pb2.Session) -> aggregator_pb2.Session:
        weaker = aggregator_pb2.Session()
        weaker.CopyFrom(session)
        for name, value in changes.items():
            setattr(weaker.secagg, name, value)
        return weaker
    return lie


def _weaker_graph(participants: secagg_pb2.Participants, client_id: str) -> None:
    participants.degree, participants.threshold = 2, 2  # what a corrupt fraction of 0 would give


def _too_few_participants(participants: secagg_pb2.Participants, client_id: str) -> None:
    kept = [a for a in participants.clients if a.client_id == client_id][:1] + [
        a for a in participants.clients if a.client_id != client_id][:1]
    del participants.clients[:]
    participants.clients.extend(kept)
    participants.degree, participants.threshold = 1, 1


@pytest.mark.parametrize("session, participants, expected", [
    (_weaker_config(corrupt_fraction=0.0), None, "corrupt fraction 0 is below the pinned 0.1"),
    (_weaker_config(frac_bits=secagg_config(SECURITY, N).frac_bits + 4), None, "encoding (frac_bits) differs"),
    (_weaker_config(min_participants=2), None, "accepts rounds of 2 participants"),
    (None, _weaker_graph, "neighbour graph (k = 2, t = 2) for 5 participants is weaker"),
    (None, _too_few_participants, "only 2 participants"),
], ids=["corrupt-fraction", "precision", "min-participants", "graph", "participants"])
def test_weaker_parameters_than_the_federation_file_are_refused_before_any_secret_is_shared(session, participants, expected):
    class Weaken(Lie):
        def session(self, honest):
            return session(honest) if session else honest

        def rewrite(self, client_id, stage, round_):
            if stage.name != SHARE or participants is None:
                return stage
            changed = secagg_pb2.Participants.FromString(stage.body)
            participants(changed, client_id)
            return Stage(SHARE, changed.SerializeToString())

    with lying_federation(N, Weaken()) as fed:
        outcomes = fed.run("weak", vectors())
        sent = fed.service.sent
    assert not sent.bodies(SHARE) and not sent.submissions
    assert all(isinstance(o, VerificationFailed) and expected in str(o) for o in outcomes), outcomes


def test_a_receipt_digest_the_sites_do_not_know_is_refused_before_anything_is_sent():
    """An aggregator naming a hash no site knows (one it could hope to break) gets no stage
    answer and no update: every site refuses the session, naming the fix."""
    class UnknownDigest(Lie):
        def session(self, honest):
            lied = aggregator_pb2.Session()
            lied.CopyFrom(honest)
            lied.receipt_digest = "md5"
            return lied

    with lying_federation(N, UnknownDigest()) as fed:
        outcomes = fed.run("unknown-digest", vectors())
        sent = fed.service.sent
    assert not sent.answers and not sent.submissions
    assert all(isinstance(o, InvalidInput) and "upgrade securefl" in str(o) for o in outcomes), outcomes


def _unmask_answers(sent: Sent, round_id: str) -> list[bytes]:
    return [b for b in sent.bodies(UNMASK) if secagg_pb2.UnmaskResponse.FromString(b).round_id == round_id]


def test_confirmations_replayed_from_another_round_do_not_count():
    class ReplayLastRound(KeepsConfirmations):
        def confirmations_for(self, client_id, survivors):
            earlier = map(secagg_pb2.SurvivorConfirmation.FromString, fed.service.sent.bodies(CONFIRM))
            return [secagg_pb2.SurvivorConfirmation(round_id="replayed", client_id=c.client_id, signature=c.signature)
                    for c in earlier if c.round_id == "honest"]

    with lying_federation(N, ReplayLastRound(target="replayed")) as fed:
        assert all(isinstance(o, np.ndarray) for o in fed.run("honest", vectors()))
        outcomes = fed.run("replayed", vectors())
        assert not _unmask_answers(fed.service.sent, "replayed")
    assert all(isinstance(o, VerificationFailed) and "signature does not verify" in str(o) for o in outcomes), outcomes


def test_a_confirmation_of_another_survivor_set_does_not_count():
    class ForwardOtherSet(KeepsConfirmations):
        def shown(self, client_id, survivors):
            return [s for s in survivors if s != fed.ids[4]] if client_id == fed.ids[0] else survivors

        def confirmations_for(self, client_id, survivors):
            return [c for _, c in self.kept.values()]  # client 0's confirmation is for a different set

    with lying_federation(N, ForwardOtherSet()) as fed:
        outcomes = fed.run("other-set", vectors())
        assert not _unmask_answers(fed.service.sent, "other-set")
    assert all(isinstance(o, VerificationFailed) for o in outcomes), outcomes
    assert all("signature does not verify" in str(o) for o in outcomes[1:])


# -- malicious clients -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(N, scheme="secagg", min_clients=3, secagg=SecAggSettings(
            stage_timeout=1.5, value_bound=SECURITY.value_bound, max_weight=SECURITY.max_weight)) as fed:
        yield fed


@pytest.fixture
def cheater(federation):
    yield federation.clients[0]
    federation.clients[0]._scheme = None  # honest again for the next test


def _outcomes(federation, round_id: str) -> list:
    return run_all(federation.clients, round_id, vectors())


def test_a_dealer_whose_shares_do_not_rebuild_its_committed_seed_is_named(federation, cheater):
    cheat(cheater, InconsistentSeedDealer)
    outcomes = _outcomes(federation, "inconsistent-dealer")
    assert all(isinstance(o, ProtocolViolation) for o in outcomes), outcomes
    assert "client site-1 dealt shares that do not rebuild its committed self-mask seed" in str(outcomes[1])


def test_a_holder_revealing_a_share_it_never_received_is_named(federation, cheater):
    cheat(cheater, LyingHolder)
    outcomes = _outcomes(federation, "lying-holder")
    assert all(isinstance(o, ProtocolViolation) for o in outcomes), outcomes
    assert "client site-1 revealed a share of" in str(outcomes[1]) and "does not match the commitment" in str(outcomes[1])


def test_a_dealer_encrypting_shares_other_than_it_committed_to_is_named_by_their_holders(federation, cheater):
    cheat(cheater, MismatchedCommitmentDealer)
    outcomes = _outcomes(federation, "mismatched-commitments")
    for honest in outcomes[1:]:
        assert isinstance(honest, VerificationFailed) and "client site-1 dealt a share that does not match" in str(honest)
