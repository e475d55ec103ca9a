"""Who may ask the aggregator what, attacked over real sockets with mutual TLS: an enrolled
site that reaches for another round's result, opens rounds, reads rounds it takes no part in,
or speaks for another site in a stage; and the operator, who may open and read rounds."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from securefl.pki import AGGREGATOR, KEYHOLDER, OPERATOR, SITE
from securefl.services.rpc import channel
from securefl.simulation import LocalFederation
from securefl.v1 import aggregator_pb2, keyholder_pb2, keyholder_pb2_grpc
from tests.conftest import run_round
from tests.submissions import RawAggregator


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(3, scheme="plain", min_clients=2, expected_clients=2) as fed:
        yield fed


@pytest.fixture(scope="module")
def finished_round(federation):
    """A round that site-1 and site-2 completed; site-3 took no part."""
    updates = [np.full(4, 1.0), np.full(4, 3.0)]
    run_round(federation.clients[:2], updates, [1.0, 1.0], round_id="finished")
    return "finished"


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failure:
        result = call()
        if hasattr(result, "__next__"):  # a streaming call fails when read
            list(result)
    return failure.value


def test_a_site_cannot_fetch_the_result_of_a_round_it_did_not_contribute_to(federation, finished_round):
    stranger = RawAggregator(federation).stub_as(SITE, "site-3")
    error = refused(lambda: stranger.AwaitResult(aggregator_pb2.RoundRequest(round_id=finished_round), timeout=10))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "did not contribute" in error.details()
    contributor = RawAggregator(federation).stub_as(SITE, "site-1")
    messages = list(contributor.AwaitResult(aggregator_pb2.RoundRequest(round_id=finished_round), timeout=10))
    assert messages[0].header.contributors == 2


def test_a_result_is_the_same_for_a_caller_whose_stub_does_not_register_the_method(federation, finished_round):
    """Results go out serialized once (`AwaitResult` has no response serializer); a call that
    does not name a registered method must still be served by that handler, not fail."""
    registered = RawAggregator(federation).stub_as(SITE, "site-2")
    expected = list(registered.AwaitResult(aggregator_pb2.RoundRequest(round_id=finished_round), timeout=10))
    unregistered = channel(federation.aggregator_address, federation.credentials(SITE, "site-2"),
                           server=federation.federation.party(AGGREGATOR)).unary_stream(
        "/securefl.v1.Aggregator/AwaitResult", request_serializer=aggregator_pb2.RoundRequest.SerializeToString,
        response_deserializer=aggregator_pb2.ResultMessage.FromString)
    messages = list(unregistered(aggregator_pb2.RoundRequest(round_id=finished_round), timeout=10))
    assert messages == expected and messages[0].header.contributors == 2
    average = np.frombuffer(b"".join(m.chunk.data for m in messages[1:]), messages[0].header.dtype)
    assert np.allclose(average, np.full(4, 2.0))


def test_a_site_cannot_read_a_round_it_takes_no_part_in(federation, finished_round):
    raw = RawAggregator(federation)
    error = refused(lambda: raw.stub_as(SITE, "site-3").GetRound(aggregator_pb2.RoundRequest(round_id=finished_round)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert raw.stub_as(SITE, "site-2").GetRound(aggregator_pb2.RoundRequest(round_id=finished_round)).contributors == 2
    assert raw.round_info(finished_round).state == "complete"  # the operator reads any round


def test_a_site_cannot_open_a_round_and_nothing_is_created(federation):
    raw = RawAggregator(federation)
    request = aggregator_pb2.OpenRoundRequest(round_id="trap", config=aggregator_pb2.RoundConfig(
        min_clients=1000, expected_clients=1000))
    error = refused(lambda: raw.stub_as(SITE, "site-1").OpenRound(request))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "operator" in error.details()
    missing = refused(lambda: raw.round_info("trap"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert raw.open_round("operator-round", min_clients=1, expected_clients=1).state == "open"


def test_a_site_cannot_join_or_follow_stages_as_another_site(federation):
    site_1 = RawAggregator(federation).stub_as(SITE, "site-1")
    error = refused(lambda: site_1.JoinRound(aggregator_pb2.JoinRoundRequest(client_id="site-2")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "site-2" in error.details()
    error = refused(lambda: site_1.AwaitStage(aggregator_pb2.StageRequest(round_id="operator-round", client_id="site-2"),
                                              timeout=10))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_site_cannot_follow_stages_of_a_round_it_did_not_join(federation, finished_round):
    stranger = RawAggregator(federation).stub_as(SITE, "site-3")
    error = refused(lambda: stranger.AwaitStage(aggregator_pb2.StageRequest(round_id=finished_round, client_id="site-3"),
                                                timeout=10))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "takes no part" in error.details()


def test_the_key_holder_refuses_a_site_and_the_operator():
    with LocalFederation(2) as fed:
        for role, party in ((SITE, "site-1"), (OPERATOR, "operator")):
            stub = keyholder_pb2_grpc.KeyHolderStub(channel(
                f"127.0.0.1:{fed.keyholder.port}", fed.credentials(role, party), server=fed.federation.party(KEYHOLDER)))
            header = keyholder_pb2.DecryptHeader(round_id="r1", vector_length=4, chunk_count=1)
            error = refused(lambda: stub.Decrypt(iter([keyholder_pb2.DecryptMessage(header=header)]), timeout=10))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, role
            error = refused(lambda: stub.RegisterRound(keyholder_pb2.RegisterRoundRequest(round_id="r1"), timeout=10))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, role
