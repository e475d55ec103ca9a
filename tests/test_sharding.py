"""Rounds split by chunk range across several aggregator processes: each shard sums its range
(with the weight), a coordinator fixes one contributor set for all shards, the client joins
the shards' averages. Over real processes and gRPC for every scheme, and the coordinator's
rules in process."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from securefl.errors import InvalidInput, QuorumTimeout, RoundClosed
from securefl.pki import AGGREGATOR, SITE
from securefl.rounds.inprocess import ManualClock
from securefl.rounds.scheme import RoundConfig
from securefl.rounds.sharding import Coordinator, shard_ranges, shard_round_id, split_round_id
from securefl.services.rpc import channel
from securefl.simulation import LocalFederation, SecAggSettings
from securefl.v1 import shard_pb2, shard_pb2_grpc
from tests.conftest import run_round, weighted_average

# ckks: the key-holder floods every release (he/ckks.py), σ ≈ 2e-4 on these averages
TOLERANCE = {"plain": 1e-6, "bfv": 1e-3, "ckks": 2e-3, "secagg": 2e-3}
TIGHT = SecAggSettings(stage_timeout=30.0, value_bound=10.0, max_weight=10.0)
OPTIONS = {"plain": {}, "bfv": {"secagg": TIGHT}, "ckks": {"preset": "add-only-4096", "secagg": TIGHT},
           "secagg": {"secagg": TIGHT}}


@pytest.mark.parametrize("scheme", ["plain", "bfv", "ckks", "secagg"])
def test_a_round_split_across_three_aggregators_gives_the_exact_average(scheme, rng):
    length = 600_000  # three chunks of the plain and masked schemes, many ciphertexts
    with LocalFederation(3, scheme=scheme, shards=3, **OPTIONS[scheme]) as federation:
        updates = [rng.uniform(-5, 5, size=length) for _ in range(3)]
        weights = [1.0, 2.0, 4.0]
        results = run_round(federation.clients, updates, weights, round_id="sharded", timeout=120)
    expected = weighted_average(updates, weights)
    for result in results:
        assert result.shape == (length,)
        assert np.abs(result - expected).max() / np.abs(expected).max() < TOLERANCE[scheme]


def test_a_client_that_reaches_only_some_shards_is_counted_by_none(rng):
    length = 300_000
    with LocalFederation(3, scheme="plain", shards=2, min_clients=2, round_timeout=6.0) as federation:
        updates = [rng.uniform(-5, 5, size=length) for _ in range(3)]
        ranges = shard_ranges(length, 2, federation.clients[0].shards[0].session.chunk_values)
        with ThreadPoolExecutor(3) as pool:
            partial = pool.submit(federation.clients[2].shards[0].aggregate, updates[2][slice(*ranges[0])],
                                  round_id=shard_round_id("partial", 0, 2), timeout=60)
            complete = [pool.submit(federation.clients[i].aggregate, updates[i], round_id="partial", timeout=60)
                        for i in (0, 1)]
            results = [future.result() for future in complete]
            with pytest.raises(RoundClosed):
                partial.result()
    expected = weighted_average(updates[:2], [1.0, 1.0])
    for result in results:
        assert np.abs(result - expected).max() < 1e-6


def test_shard_ranges_cover_the_vector_on_chunk_boundaries():
    ranges = shard_ranges(1_000_001, 3, 65536)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1_000_001
    assert all(stop == start for (_, stop), (start, _) in zip(ranges, ranges[1:]))
    assert all(start % 65536 == 0 for start, _ in ranges)
    with pytest.raises(InvalidInput):
        shard_ranges(100, 3, 65536)  # one chunk cannot go to three shards


def test_a_shard_refuses_rounds_of_another_shard_layout():
    assert split_round_id(shard_round_id("r1", 1, 3), 1, 3) == "r1"
    for other in (shard_round_id("r1", 0, 3), shard_round_id("r1", 1, 2), "r1"):
        with pytest.raises(InvalidInput):
            split_round_id(other, 1, 3)


def test_the_coordinator_commits_a_client_only_once_every_shard_validated_it():
    coordinator = Coordinator(2, RoundConfig(1, 2))
    answers: list[bool] = []
    first = threading.Thread(target=lambda: answers.append(coordinator.ready("r", "a", 0)))
    first.start()
    first.join(0.2)
    assert first.is_alive() and coordinator.await_close("r", 0) is None  # shard 0 holds a's part, waiting
    assert coordinator.ready("r", "a", 1)
    first.join(5)
    assert answers == [True]
    for shard in (1, 0):
        threading.Thread(target=coordinator.ready, args=("r", "b", shard)).start()
    assert coordinator.await_close("r", 5) == ["a", "b"]  # expected_clients reached: closed


def test_the_coordinator_closes_at_the_deadline_with_the_committed_clients_or_fails_without_quorum():
    clock = ManualClock()
    coordinator = Coordinator(2, RoundConfig(2, 0, 10.0), clock=clock)
    for shard in (0, 1):
        threading.Thread(target=coordinator.ready, args=("quorum", "a", shard)).start()
        threading.Thread(target=coordinator.ready, args=("quorum", "b", shard)).start()
    aborted: list[bool] = []
    waiting = threading.Thread(target=lambda: aborted.append(coordinator.ready("quorum", "c", 0)))
    waiting.start()
    coordinator.await_close("none", 0)  # opens a second round now
    threading.Event().wait(0.3)
    clock.advance(11)
    assert coordinator.await_close("quorum", 5) == ["a", "b"]
    waiting.join(5)
    assert aborted == [False]  # c reached one shard only: dropped
    with pytest.raises(QuorumTimeout):
        coordinator.await_close("none", 5)


def test_only_the_aggregators_certificate_may_talk_to_the_coordinator():
    """A site that could report parts as validated would commit clients no shard holds."""
    with LocalFederation(2, scheme="plain", shards=2) as federation:
        coordinator = shard_pb2_grpc.CoordinatorStub(channel(
            federation.aggregator_address, federation.credentials(SITE, federation.identities[0].client_id),
            server=federation.federation.party(AGGREGATOR)))
        for call, request in ((coordinator.Ready, shard_pb2.ReadyRequest(round_id="r", client_id="site-2", shard=1)),
                              (coordinator.AwaitClose, shard_pb2.CloseRequest(round_id="r"))):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
