"""Each rule an honest SecAgg+ client keeps against a lying aggregator, and each check of the
server half against cheating clients, one at a time, in process (the gRPC attacks are in
test_secagg_malicious.py)."""

from __future__ import annotations

import pytest

from securefl.errors import InvalidInput, ProtocolViolation, VerificationFailed
from securefl.masking.client import SecAggClient
from securefl.masking.graph import choose_params
from securefl.federation import SecurityParameters
from securefl.masking.policy import check_config, check_graph, confirmation_quorum, secagg_config
from securefl.masking.server import CONFIRM, MASK_SET, MASKED, SHARE, UNMASK
from securefl.rounds.scheme import Stage
from securefl.v1 import aggregator_pb2, secagg_pb2
from tests.secagg_attacks import InconsistentKeyDealer
from tests.secagg_rounds import TEST_SECURITY, Enrolment, HandRound


def participant(hand: HandRound, client_id: str):
    return hand.jobs[client_id].participant


def survivor_set(ids) -> Stage:
    return Stage(CONFIRM, secagg_pb2.SurvivorSet(survivors=sorted(ids)).SerializeToString())


# -- pinned parameters --------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"corrupt_fraction": 0.0}, "corrupt fraction 0 is below the pinned 0.1"),
    ({"bits": 64}, "encoding (bits) differs"),
    ({"value_bound": 20.0}, "encoding (value_bound) differs"),
    ({"min_participants": 1}, "accepts rounds of 1 participants"),
])
def test_a_session_weaker_than_the_pins_is_refused(change, message):
    enrolment = Enrolment(4)
    session = aggregator_pb2.Session()
    session.CopyFrom(enrolment.session)
    for name, value in change.items():
        setattr(session.secagg, name, value)
    with pytest.raises(VerificationFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        SecAggClient(session, enrolment.identities[0], enrolment.federation)


def test_a_stronger_aggregator_is_accepted_and_its_denser_graph_too():
    stronger = SecurityParameters(dropout_fraction=0.1, corrupt_fraction=0.2, value_bound=TEST_SECURITY.value_bound,
                                  max_weight=TEST_SECURITY.max_weight, min_participants=5)
    check_config(TEST_SECURITY, secagg_config(stronger, 100), 100)
    k, t = choose_params(100, 0.1, 0.2)
    pinned_k, pinned_t = choose_params(100, 0.1, 0.1)
    assert (k, t) != (pinned_k, pinned_t) and t >= pinned_t
    check_graph(TEST_SECURITY, 100, k, t)
    for weaker in ((pinned_k, pinned_t - 1), (2, 2), (pinned_k + 1, pinned_t)):
        with pytest.raises(VerificationFailed, match="weaker than this site's federation file allows"):
            check_graph(TEST_SECURITY, 100, *weaker)


def test_a_participant_list_that_misrepresents_anyone_is_refused():
    hand = HandRound(Enrolment(4))
    hand.until(SHARE)
    honest = secagg_pb2.Participants.FromString(hand.stage("c000").body)

    def refused(change, message: str, client: str = "c000") -> None:
        participants = secagg_pb2.Participants()
        participants.CopyFrom(honest)
        change(participants)
        with pytest.raises(VerificationFailed, match=message):
            participant(hand, client).accept_participants(participants)

    refused(lambda p: setattr(p.clients[1], "round_id", "r0"), "another round")
    refused(lambda p: setattr(p.clients[1], "mask_public_key", p.clients[2].mask_public_key), "does not verify")
    refused(lambda p: p.clients.append(p.clients[1]), "names c001 twice")
    refused(lambda p: p.clients.pop(0), "own keys faithfully")
    participant(hand, "c000").accept_participants(honest)  # the honest list passes
    refused(lambda p: (p.clients.pop(3), setattr(p, "degree", 2)), "second, different participant list")


# -- key sharing ----------------------------------------------------------------------------


def test_no_masked_input_unless_t_neighbours_shared_keys_and_every_share_is_present():
    enrolment = Enrolment(5)  # k = 4, t = 3
    hand = HandRound(enrolment).until(MASKED)
    incoming = secagg_pb2.IncomingShares.FromString(hand.stage("c000").body)
    client = participant(hand, "c000")
    too_few = secagg_pb2.IncomingShares(shared=["c000", "c001", "c002"],
                                        shares=[s for s in incoming.shares if s.sender in ("c001", "c002")])
    with pytest.raises(VerificationFailed, match="only 2 of this client's 4 neighbours shared keys"):
        client.accept_shares(too_few)
    missing = secagg_pb2.IncomingShares(shared=incoming.shared, shares=incoming.shares[1:])
    with pytest.raises(VerificationFailed, match="not exactly one from each neighbour"):
        client.accept_shares(missing)
    tampered = secagg_pb2.IncomingShares()
    tampered.CopyFrom(incoming)
    tampered.shares[0].seed_commitment = bytes(32)
    with pytest.raises(VerificationFailed, match="does not decrypt"):
        client.accept_shares(tampered)
    assert client.masked_with is None
    with pytest.raises(VerificationFailed, match="before the incoming shares"):
        hand.jobs["c000"].protect(Stage("submit"))
    assert set(client.accept_shares(incoming).masked_with) == {"c001", "c002", "c003", "c004"}


# -- the consistency stage ------------------------------------------------------------------


def test_a_client_confirms_one_survivor_set_containing_itself_and_enough_neighbours():
    enrolment = Enrolment(5)  # quorum 4
    hand = HandRound(enrolment).until(CONFIRM)
    client = participant(hand, "c000")
    with pytest.raises(VerificationFailed, match="lists this client, which sent its masked input, as dropped"):
        client.confirm(secagg_pb2.SurvivorSet(survivors=["c001", "c002", "c003", "c004"]))
    with pytest.raises(VerificationFailed, match="only 3 survivors; a survivor set needs at least 4"):
        client.confirm(secagg_pb2.SurvivorSet(survivors=["c000", "c001", "c002"]))
    with pytest.raises(VerificationFailed, match="lists a client twice"):
        client.confirm(secagg_pb2.SurvivorSet(survivors=["c000", "c001", "c001", "c002", "c003"]))
    first = client.confirm(secagg_pb2.SurvivorSet(survivors=enrolment.ids))
    assert client.confirm(secagg_pb2.SurvivorSet(survivors=enrolment.ids)) == first  # asked again: the same
    with pytest.raises(VerificationFailed, match="already confirmed a different survivor set"):
        client.confirm(secagg_pb2.SurvivorSet(survivors=enrolment.ids[:4]))


def test_no_confirmation_before_the_masked_input_nor_of_clients_that_did_not_share_keys():
    enrolment = Enrolment(6)
    hand = HandRound(enrolment).until(MASKED, enrolment.ids[:5])  # c005 never shares keys
    for cid in enrolment.ids[:5]:
        hand.play(cid)  # mask sets
    client = participant(hand, "c000")
    with pytest.raises(VerificationFailed, match="before this client sent its masked input"):
        client.confirm(secagg_pb2.SurvivorSet(survivors=enrolment.ids[:5]))
    hand.play("c000")  # its masked input
    with pytest.raises(VerificationFailed, match="names clients that did not share keys"):
        client.confirm(secagg_pb2.SurvivorSet(survivors=enrolment.ids))


# -- unmasking ----------------------------------------------------------------------------------


def unmask_stage(hand: HandRound, client_id: str, **changes) -> secagg_pb2.UnmaskRequest:
    request = secagg_pb2.UnmaskRequest.FromString(hand.stage(client_id).body)
    for name, value in changes.items():
        del getattr(request, name)[:]
        getattr(request, name).extend(value)
    return request


def test_a_client_reveals_only_for_the_set_it_confirmed_with_a_quorum_of_valid_confirmations():
    enrolment = Enrolment(5)
    hand = HandRound(enrolment).until(UNMASK)
    client = participant(hand, "c000")
    honest = unmask_stage(hand, "c000")
    cases = [
        (unmask_stage(hand, "c000", survivors=enrolment.ids[1:]), "lists this client as dropped"),
        (unmask_stage(hand, "c000", survivors=enrolment.ids[:4]), "differs from the one this client confirmed"),
        (unmask_stage(hand, "c000", confirmations=honest.confirmations[:3]), "only 3 of the 5 participants confirmed"),
        (unmask_stage(hand, "c000", mask_sets=honest.mask_sets[1:]), "lacks the mask set of survivor c001"),
    ]
    forged = secagg_pb2.UnmaskRequest()
    forged.CopyFrom(honest)
    forged.confirmations[1].signature = forged.confirmations[2].signature
    cases.append((forged, "does not verify"))
    for request, message in cases:
        with pytest.raises(VerificationFailed, match=message):
            client.unmask(request)
    response = client.unmask(honest)
    assert client.unmask(honest) == response  # the same request again: the same answer
    again = unmask_stage(hand, "c000", confirmations=honest.confirmations[:4])
    with pytest.raises(VerificationFailed, match="already answered a different unmask request"):
        client.unmask(again)


def test_a_survivor_that_did_not_mask_against_a_holder_gets_no_seed_share_from_it():
    enrolment = Enrolment(5)
    hand = HandRound(enrolment).until(UNMASK)
    request = unmask_stage(hand, "c000")
    claim = next(m for m in request.mask_sets if m.client_id == "c001")
    claim.masked_with.remove("c000")  # its real, signed set named c000: the signature breaks
    with pytest.raises(VerificationFailed):
        participant(hand, "c000").unmask(request)


# -- the server half against cheating clients -----------------------------------------------------


def test_the_server_refuses_a_mask_set_other_than_the_neighbours_that_shared_keys():
    enrolment = Enrolment(5)
    hand = HandRound(enrolment).until(MASKED)
    stage = hand.stage("c000")
    mask_set = secagg_pb2.MaskSet.FromString(hand.jobs["c000"].answer(stage))
    partial = secagg_pb2.MaskSet(round_id="r1", client_id="c000", masked_with=mask_set.masked_with[:3])
    partial.signature = enrolment.identities[0].sign(b"whatever")
    with pytest.raises(VerificationFailed):
        hand.round.answer("c000", MASK_SET, partial.SerializeToString())
    hand.round.answer("c000", MASK_SET, mask_set.SerializeToString())
    with pytest.raises(InvalidInput, match="again"):
        hand.round.answer("c000", MASK_SET, mask_set.SerializeToString())


def test_a_confirmation_of_another_set_is_refused_by_the_server():
    enrolment = Enrolment(5)
    hand = HandRound(enrolment).until(CONFIRM)
    other = participant(hand, "c000").confirm(secagg_pb2.SurvivorSet(survivors=enrolment.ids[:4]))
    with pytest.raises(VerificationFailed):
        hand.round.answer("c000", CONFIRM, other.SerializeToString())
    assert not hand.round.confirmations


def test_a_dealer_whose_mask_key_shares_do_not_rebuild_its_advertised_key_is_named():
    enrolment = Enrolment(5)
    hand = HandRound(enrolment)
    cheat = participant(hand, "c004")
    hand.jobs["c004"].participant = InconsistentKeyDealer(cheat.identity, cheat.roster, cheat.config, cheat.security, "r1")
    hand.until(MASKED)
    for cid in enrolment.ids:
        hand.play(cid)  # mask sets
    hand.until(CONFIRM, enrolment.ids[:4])  # c004 shared keys, then dropped: its mask key is rebuilt
    hand.until(UNMASK, enrolment.ids[:4])
    for cid in enrolment.ids[:4]:
        hand.play(cid)
    with pytest.raises(ProtocolViolation, match="client c004 dealt shares that do not rebuild its committed mask key"):
        hand.reveal()


def test_quorum_needs_more_than_half_of_the_participants_and_the_colluders():
    assert confirmation_quorum(5, 3, 0.1) == 4  # tolerates t - 1 = 2 colluders
    assert confirmation_quorum(100, 26, 0.1) == 63
    assert confirmation_quorum(1000, 29, 0.1) == 551  # ⌈γn⌉ = 100 colluders dominate t - 1
