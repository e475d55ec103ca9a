"""SecAgg+ end to end: an aggregator process, clients over real gRPC, dropouts at every stage."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from securefl.errors import QuorumTimeout, RoundClosed, RoundFailed
from securefl.masking.server import ADVERTISE, CONFIRM, MASK_SET, MASKED, SHARE, UNMASK
from securefl.masking.statements import sign_stage_message
from securefl.pki import AGGREGATOR, SITE
from securefl.rounds.scheme import Stage
from securefl.simulation import LocalFederation, SecAggSettings, SimulatedDropout
from securefl.v1 import aggregator_pb2, aggregator_pb2_grpc, secagg_pb2
from securefl.services.rpc import channel
from tests.conftest import weighted_average
from tests.secagg_attacks import wait_for

SETTINGS = SecAggSettings(stage_timeout=1.5, value_bound=10.0, max_weight=100.0)
DROPOUT_POINTS = (ADVERTISE, SHARE, MASK_SET, MASKED, CONFIRM, UNMASK)


def run_with_dropouts(federation, updates, weights, drops, **kwargs):
    def one(i):
        try:
            return federation.clients[i].aggregate(updates[i], weight=weights[i], simulate_dropout=drops.get(i), **kwargs)
        except SimulatedDropout:
            return None

    with ThreadPoolExecutor(len(updates)) as pool:
        futures = [pool.submit(one, i) for i in range(len(updates))]
        return [f.result() for f in futures]


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(5, scheme="secagg", min_clients=3, secagg=SETTINGS) as fed:
        yield fed


def tolerance(federation) -> float:
    return 4 * 2.0 ** -federation.clients[0].session.secagg.frac_bits


def test_weighted_average_through_masking_matches_plaintext(federation, rng):
    updates = [{"w": rng.uniform(-5, 5, size=(30, 40)).astype(np.float32), "b": rng.uniform(-1, 1, size=9)}
               for _ in range(5)]
    weights = [10, 20, 30, 15, 25]
    results = run_with_dropouts(federation, updates, weights, {})
    for key in ("w", "b"):
        expected = weighted_average([u[key] for u in updates], weights)
        assert np.abs(results[0][key] - expected).max() <= tolerance(federation)
    assert all(np.array_equal(r["w"], results[0]["w"]) for r in results)
    stats = federation.clients[0].last_stats
    assert stats.bytes_sent == 4 * (30 * 40 + 9 + 1)  # uint32: plaintext float32 size


@pytest.mark.parametrize("stage", DROPOUT_POINTS)
def test_the_exact_sum_is_recovered_when_a_client_drops_at_any_stage(federation, rng, stage):
    updates = [rng.uniform(-5, 5, size=500) for _ in range(5)]
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    results = run_with_dropouts(federation, updates, weights, {4: stage})
    included = [0, 1, 2, 3, 4] if stage in (CONFIRM, UNMASK) else [0, 1, 2, 3]  # it sent its input before vanishing
    expected = weighted_average([updates[i] for i in included], [weights[i] for i in included])
    assert results[4] is None
    for result in results[:4]:
        assert np.abs(result - expected).max() <= tolerance(federation)


def test_too_many_dropouts_abort_the_round_with_a_clear_error(federation, rng):
    updates = [rng.normal(size=20) for _ in range(5)]
    with pytest.raises((RoundFailed, QuorumTimeout)):
        run_with_dropouts(federation, updates, [1.0] * 5, {3: MASKED, 4: MASKED, 2: MASKED})


def test_too_many_dropouts_during_unmasking_abort(federation, rng):
    updates = [rng.normal(size=20) for _ in range(5)]
    with pytest.raises(RoundFailed, match="too many dropouts"):
        run_with_dropouts(federation, updates, [1.0] * 5, {3: UNMASK, 4: UNMASK})


def test_a_late_message_from_a_client_declared_dropped_is_refused(federation, rng):
    round_id = "late-round"
    updates = [rng.normal(size=20) for _ in range(5)]
    run_with_dropouts(federation, updates, [1.0] * 5, {4: SHARE}, round_id=round_id)
    late_site = federation.identities[4].client_id
    stub = aggregator_pb2_grpc.AggregatorStub(channel(
        federation.aggregator_address, federation.credentials(SITE, late_site), server=federation.federation.party(AGGREGATOR)))
    late = secagg_pb2.ShareKeysRequest(round_id=round_id, client_id=federation.identities[4].client_id)
    sign_stage_message(late, federation.identities[4].sign)  # genuine, just late
    with pytest.raises(grpc.RpcError) as refused:
        stub.AnswerStage(aggregator_pb2.StageMessage(round_id=round_id, client_id=late.client_id, stage=SHARE,
                                                     body=late.SerializeToString()))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "late" in refused.value.details()
    with pytest.raises(RoundClosed):
        federation.clients[4].aggregate(updates[4], round_id=round_id)


def test_clients_that_never_show_up_count_as_dropouts_after_the_deadline(rng):
    with LocalFederation(4, scheme="secagg", min_clients=3, secagg=SETTINGS) as fed:
        updates = [rng.normal(size=50) for _ in range(3)]
        results = run_with_dropouts(fed, updates, [1.0, 1.0, 1.0], {})  # the fourth client never calls
        assert np.abs(results[0] - np.mean(updates, axis=0)).max() <= tolerance(fed)


def site_stubs(federation) -> dict[str, aggregator_pb2_grpc.AggregatorStub]:
    """A stub per enrolled site, over mutual TLS with that site's certificate."""
    return {identity.client_id: aggregator_pb2_grpc.AggregatorStub(channel(
        federation.aggregator_address, federation.credentials(SITE, identity.client_id),
        server=federation.federation.party(AGGREGATOR))) for identity in federation.identities}


def advertisement(federation, stubs, index: int, round_id: str, await_next: bool) -> aggregator_pb2.StageMessage:
    """Site `index` joins the round and makes its (genuine) key advertisement, not yet sent."""
    site = federation.identities[index].client_id
    stubs[site].JoinRound(aggregator_pb2.JoinRoundRequest(client_id=site, round_id=round_id), timeout=10)
    stage = stubs[site].AwaitStage(aggregator_pb2.StageRequest(round_id=round_id, client_id=site), timeout=10)
    assert stage.stage == ADVERTISE
    body = federation.clients[index].scheme.start(round_id, np.zeros(3), 1.0).answer(Stage(stage.stage, stage.body))
    return aggregator_pb2.StageMessage(round_id=round_id, client_id=site, stage=ADVERTISE, body=body,
                                       await_next=await_next)


def test_an_answer_that_asks_for_the_next_stage_is_acknowledged_with_it_once_it_opens(federation):
    """One call per stage instead of two (AnswerStage with await_next); an answer without it is
    acknowledged at once, as before."""
    round_id = "answers-bring-next-stages"
    stubs = site_stubs(federation)
    sites = list(stubs)
    *waiting, last = sites
    answers = {site: advertisement(federation, stubs, i, round_id, site != last) for i, site in enumerate(sites)}
    with ThreadPoolExecutor(len(waiting)) as pool:
        acks = [pool.submit(stubs[site].AnswerStage, answers[site], timeout=30) for site in waiting]
        plain_ack = stubs[last].AnswerStage(answers[last], timeout=10)  # the last answer opens the share stage
        acks = [ack.result(timeout=30) for ack in acks]
    assert plain_ack.stage == ADVERTISE and not plain_ack.next.stage
    participants = secagg_pb2.Participants.FromString(acks[0].next.body)
    assert sorted(a.client_id for a in participants.clients) == sorted(sites)
    assert [(ack.next.stage, ack.next.round_id, ack.next.client_id) for ack in acks] == [
        (SHARE, round_id, site) for site in waiting]


def test_an_answer_from_a_site_at_its_cap_on_long_polls_is_taken_and_acknowledged_without_the_next_stage():
    """The wait that `await_next` asks for counts against the site's long polls; refused it,
    the answer still counts and the acknowledgement comes at once, with no next stage."""
    settings = SecAggSettings(stage_timeout=60.0, value_bound=10.0, max_weight=100.0)
    with ThreadPoolExecutor(1) as pool, LocalFederation(3, scheme="secagg", min_clients=3, secagg=settings,
                                                        aggregator_args=["--max-waits-per-site", "1"]) as fed:
        stubs = site_stubs(fed)
        sites = list(stubs)
        capped = sites[0]
        answer = advertisement(fed, stubs, 0, "capped", True)
        stubs[capped].AnswerStage(advertisement(fed, stubs, 0, "held", False), timeout=10)
        pool.submit(stubs[capped].AwaitStage,  # its one long poll: a share stage that does not come
                    aggregator_pb2.StageRequest(round_id="held", client_id=capped), timeout=60)

        def at_cap() -> bool:
            try:
                stubs[capped].AwaitStage(aggregator_pb2.StageRequest(round_id="capped", client_id=capped), timeout=10)
            except grpc.RpcError as refused:
                return refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        assert wait_for(at_cap)

        started = time.monotonic()
        ack = stubs[capped].AnswerStage(answer, timeout=30)
        assert ack.stage == ADVERTISE and not ack.next.stage and time.monotonic() - started < 5
        stubs[sites[1]].AnswerStage(advertisement(fed, stubs, 1, "capped", False), timeout=10)
        last = stubs[sites[2]].AnswerStage(advertisement(fed, stubs, 2, "capped", True), timeout=30)
        assert last.next.stage == SHARE
        participants = secagg_pb2.Participants.FromString(last.next.body)
        assert sorted(a.client_id for a in participants.clients) == sorted(sites)  # the capped answer counted
