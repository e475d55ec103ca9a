"""SecAgg+ building blocks and the protocol run in-process: the aggregate equals the exact sum
of the quantized updates for any participants, vector sizes and dropouts at every stage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from securefl.errors import InvalidInput, RoundClosed, RoundFailed, VerificationFailed
from securefl.identity import Identity, Roster
from securefl.masking import keys, shamir
from securefl.masking.client import SecAggClient, SecAggClientRound, SecAggParticipant
from securefl.masking.graph import choose_params, graph_seed, neighbours
from securefl.masking.prg import expand
from securefl.masking.server import (
    ADVERTISE, MASKED, SECAGG, SHARE, UNMASK, SecAggRound, SecAggServer, secagg_config,
)
from securefl.quantize import FixedPoint
from securefl.rounds.inprocess import InProcessFederation, ManualClock
from securefl.rounds.scheme import RoundConfig, Stage
from securefl.v1 import aggregator_pb2, secagg_pb2


# -- fixed point --------------------------------------------------------------------------

def test_encoding_round_trips_within_its_resolution(rng):
    encoding = FixedPoint.for_round(10, value_bound=5.0, max_weight=4.0)
    values = rng.uniform(-5, 5, size=1000)
    decoded = encoding.decode(encoding.encode(values, 3.0))
    assert np.all(np.abs(decoded[:-1] - 3.0 * values) <= 2.0**-encoding.frac_bits) and decoded[-1] == 3.0


def test_stochastic_rounding_is_unbiased():
    encoding = FixedPoint(32, 2, 10.0, 1.0)  # resolution 0.25
    decoded = encoding.decode(encoding.encode(np.full(200_000, 0.1), 1.0))[:-1]
    assert abs(decoded.mean() - 0.1) < 0.002 and set(np.unique(decoded)) == {0.0, 0.25}


def test_values_are_clipped_and_weights_bounded():
    encoding = FixedPoint.for_round(4, value_bound=1.0, max_weight=2.0)
    assert encoding.decode(encoding.encode(np.array([50.0, -50.0]), 1.0))[:2].tolist() == [1.0, -1.0]
    with pytest.raises(InvalidInput, match="weight"):
        encoding.encode(np.zeros(2), 3.0)


def test_parameters_that_leave_too_little_precision_are_refused_with_advice():
    with pytest.raises(InvalidInput, match="lower value_bound or max_weight"):
        FixedPoint.for_round(10_000, value_bound=1000.0, max_weight=1e6)


def test_a_full_federation_cannot_overflow(rng):
    encoding = FixedPoint.for_round(50, value_bound=2.0, max_weight=7.0)
    total = sum(encoding.encode(np.full(10, 2.0), 7.0) for _ in range(50))
    assert encoding.decode(total)[0] == pytest.approx(50 * 2.0 * 7.0)


# -- PRG, Shamir, graph -------------------------------------------------------------------

def test_masks_are_deterministic_per_seed_and_fill_the_range():
    a = expand(b"k" * 32, 100_000, np.uint32)
    assert np.array_equal(a, expand(b"k" * 32, 100_000, np.uint32))
    assert not np.array_equal(a, expand(b"j" * 32, 100_000, np.uint32))
    assert abs(a.mean() / 2**32 - 0.5) < 0.01 and expand(b"k" * 32, 3, np.uint64).dtype == np.uint64


@given(threshold=st.integers(1, 8), extra=st.integers(0, 5), secret=st.binary(min_size=32, max_size=32))
@settings(max_examples=30, deadline=None)
def test_any_threshold_shares_reconstruct_the_secret(threshold, extra, secret):
    shares = shamir.split(secret, list(range(1, threshold + extra + 1)), threshold)
    chosen = dict(list(shares.items())[extra:])
    assert shamir.combine(chosen, threshold) == secret


def test_fewer_than_threshold_shares_reconstruct_nothing_usable():
    secret = b"s" * 32
    shares = shamir.split(secret, [1, 2, 3, 4], 3)
    two = {1: shares[1], 2: shares[2]}
    with pytest.raises(ValueError):
        shamir.combine(two, 3)
    # Completing two shares with any guessed third share yields some value, never the secret:
    # two shares are consistent with every possible secret.
    for guess in range(20):
        try:
            assert shamir.combine({**two, 3: guess.to_bytes(shamir.SHARE_BYTES, "big")}, 3) != secret
        except ValueError:
            pass  # the interpolated value is not even a 32-byte secret


def test_degree_is_logarithmic_and_threshold_a_majority():
    for n in (100, 1000, 100_000):
        k, t = choose_params(n, 0.1, 0.1)
        assert k < 8 * np.log2(n) and k // 2 < t <= k
    assert choose_params(5, 0.1, 0.1) == (4, 3)  # small federations use the complete graph


def test_neighbour_graph_is_regular_and_symmetric():
    ids = [f"c{i}" for i in range(60)]
    k, _ = choose_params(60, 0.1, 0.1)
    graph = neighbours(ids, k, graph_seed("r", ids))
    assert all(len(peers) == k and cid not in peers for cid, peers in graph.items())
    assert all(cid in graph[peer] for cid, peers in graph.items() for peer in peers)
    assert neighbours(ids, k, graph_seed("r", ids)) == graph != neighbours(ids, k, graph_seed("r2", ids))


def test_a_share_replayed_from_another_round_does_not_decrypt():
    a, b = keys.new_private_key(), keys.new_private_key()
    key_r1 = keys.derive(a, keys.public_bytes(b), keys.SHARE_KEY_LABEL, "r1", "alice", "bob")
    sealed = keys.seal_share(key_r1, b"share", "r1", "alice", "bob")
    assert keys.open_share(key_r1, sealed, "r1", "alice", "bob") == b"share"
    key_r2 = keys.derive(a, keys.public_bytes(b), keys.SHARE_KEY_LABEL, "r2", "alice", "bob")
    for key, round_id, sender in ((key_r2, "r2", "alice"), (key_r1, "r2", "alice"), (key_r1, "r1", "carol")):
        with pytest.raises(VerificationFailed):
            keys.open_share(key, sealed, round_id, sender, "bob")


# -- the protocol, in process -------------------------------------------------------------

class Protocol:
    """SecAgg+ rounds through the round engine and the scheme's two halves, without the network."""

    def __init__(self, n: int, dropout_fraction: float = 0.1) -> None:
        self.identities = [Identity.generate(f"c{i:03d}") for i in range(n)]
        self.roster = Roster.of(self.identities)
        self.config = secagg_config(n, value_bound=10.0, max_weight=10.0, dropout_fraction=dropout_fraction)
        self.clock = ManualClock()
        self.server = SecAggServer(self.config, self.roster, min_clients=2, stage_timeout=30, clock=self.clock)
        session = aggregator_pb2.Session(scheme=SECAGG)
        self.server.describe(session)
        clients = {i.client_id: SecAggClient(session, i, self.roster) for i in self.identities}
        self.federation = InProcessFederation.start(self.server, clients, self.identities, RoundConfig(2, n),
                                                    self.clock, step_seconds=31)
        self.ids = sorted(clients)

    def exact_vectors(self, rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
        """Updates on the encoding's grid, so stochastic rounding is exact and sums are known."""
        step = 2.0 ** -self.config.frac_bits
        return {cid: rng.integers(-2**20, 2**20, size=length) * step for cid in self.ids}

    def run(self, vectors: dict[str, np.ndarray], drops: dict[str, str], round_id: str = "r1") -> np.ndarray:
        return self.federation.run(round_id, vectors, {cid: 1.0 for cid in vectors}, drops).average

    def round_at_unmask(self) -> tuple[SecAggRound, dict[str, SecAggClientRound]]:
        """A round whose five clients all shared keys, driven by hand up to the masked input."""
        round_ = self.server.new_round("r1", RoundConfig(2, len(self.ids)), self.clock())
        jobs = {cid: _client_round(i, self.roster, self.config, "r1")
                for cid, i in zip(self.ids, self.identities)}
        for stage in (ADVERTISE, SHARE):
            for cid in self.ids:
                round_.answer(cid, stage, jobs[cid].answer(round_.stage_for(cid, False)))
        for cid in self.ids:
            jobs[cid].participant.accept_shares(
                secagg_pb2.IncomingShares.FromString(round_.stage_for(cid, False).body))
        return round_, jobs


def _client_round(identity: Identity, roster: Roster, config, round_id: str) -> SecAggClientRound:
    participant = SecAggParticipant(identity, roster, config, round_id)
    return SecAggClientRound(participant, participant.encoding.encode(np.zeros(3), 1.0))


def expected_average(vectors: dict[str, np.ndarray], contributors: list[str]) -> np.ndarray:
    return sum(vectors[cid] for cid in contributors) / len(contributors)


@st.composite
def rounds_with_tolerable_dropouts(draw):
    n = draw(st.integers(3, 10))
    early = draw(st.integers(0, n - 3))  # drop before advertising: they never join the graph
    n1 = n - early
    k, t = choose_params(n1, 0.1, 0.1)
    late = draw(st.integers(0, k - t))
    stages = draw(st.lists(st.sampled_from([SHARE, MASKED, UNMASK]), min_size=late, max_size=late))
    order = draw(st.permutations(range(n)))
    ids = [f"c{i:03d}" for i in order]
    drops = {cid: ADVERTISE for cid in ids[:early]} | {cid: stage for cid, stage in zip(ids[early:], stages)}
    return n, draw(st.integers(1, 300)), drops


@given(case=rounds_with_tolerable_dropouts(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_aggregate_is_the_exact_sum_of_quantized_updates_whatever_drops(case, seed):
    n, length, drops = case
    protocol = Protocol(n)
    vectors = protocol.exact_vectors(np.random.default_rng(seed), length)
    contributors = [cid for cid in protocol.ids if drops.get(cid) not in (ADVERTISE, SHARE, MASKED)]
    assert np.array_equal(protocol.run(vectors, drops), expected_average(vectors, contributors))


def test_sparse_graph_round_recovers_the_exact_sum_with_dropouts(rng):
    protocol = Protocol(60)
    k, _ = choose_params(60, 0.1, 0.1)
    assert k < 59
    ids = protocol.ids
    drops = {ids[3]: SHARE, ids[17]: MASKED, ids[41]: MASKED, ids[50]: UNMASK}
    vectors = protocol.exact_vectors(rng, 50)
    contributors = [cid for cid in ids if drops.get(cid) not in (SHARE, MASKED)]
    assert np.array_equal(protocol.run(vectors, drops), expected_average(vectors, contributors))


def test_too_many_dropouts_abort_cleanly(rng):
    protocol = Protocol(5)  # k = 4, t = 3: one dropout tolerated
    ids = protocol.ids
    with pytest.raises(RoundFailed, match="too many dropouts"):
        protocol.run(protocol.exact_vectors(rng, 5), {ids[0]: UNMASK, ids[1]: UNMASK})


def test_a_stage_with_too_few_clients_aborts_the_round(rng):
    protocol = Protocol(5)
    with pytest.raises(RoundFailed, match="advertised keys"):
        protocol.run(protocol.exact_vectors(rng, 5), {cid: ADVERTISE for cid in protocol.ids[1:]})


def test_clients_refuse_overlapping_or_undersized_unmask_requests():
    protocol = Protocol(5)
    _, jobs = protocol.round_at_unmask()
    client, ids = jobs[protocol.ids[0]].participant, protocol.ids
    with pytest.raises(InvalidInput, match="both as survivor and as dropped"):
        client.unmask(secagg_pb2.UnmaskRequest(survivors=ids[:4], dropped=[ids[3], ids[4]]))
    with pytest.raises(InvalidInput, match="below the threshold"):
        client.unmask(secagg_pb2.UnmaskRequest(survivors=ids[:2], dropped=ids[2:]))
    with pytest.raises(InvalidInput, match="did not share keys"):
        client.unmask(secagg_pb2.UnmaskRequest(survivors=ids, dropped=["stranger"]))


def test_a_client_reveals_at_most_one_secret_per_neighbour():
    protocol = Protocol(5)
    _, jobs = protocol.round_at_unmask()
    ids = protocol.ids
    response = jobs[ids[0]].participant.unmask(secagg_pb2.UnmaskRequest(survivors=ids[:4], dropped=ids[4:]))
    seeds, keys_ = {s.owner for s in response.seed_shares}, {s.owner for s in response.key_shares}
    assert not seeds & keys_ and keys_ == {ids[4]}


def test_shares_from_another_round_are_refused_by_the_recipient():
    protocol = Protocol(3)
    first, _ = protocol.round_at_unmask()
    replayed = secagg_pb2.IncomingShares.FromString(first.stage_for(protocol.ids[0], False).body)
    second = protocol.server.new_round("r2", RoundConfig(2, 3), protocol.clock())
    jobs = {cid: _client_round(i, protocol.roster, protocol.config, "r2")
            for cid, i in zip(protocol.ids, protocol.identities)}
    for stage in (ADVERTISE, SHARE):
        for cid in protocol.ids:
            second.answer(cid, stage, jobs[cid].answer(second.stage_for(cid, False)))
    with pytest.raises(VerificationFailed):
        jobs[protocol.ids[0]].participant.accept_shares(replayed)


def test_late_key_messages_are_refused_after_the_stage_closed():
    protocol = Protocol(4)
    round_ = protocol.server.new_round("r1", RoundConfig(2, 4), protocol.clock())
    jobs = {cid: _client_round(i, protocol.roster, protocol.config, "r1")
            for cid, i in zip(protocol.ids, protocol.identities)}
    for cid in protocol.ids[:3]:
        round_.answer(cid, ADVERTISE, jobs[cid].answer(round_.stage_for(cid, False)))
    protocol.clock.advance(31)
    round_.tick(protocol.clock())
    with pytest.raises(RoundClosed, match="late"):
        round_.answer(protocol.ids[3], ADVERTISE, jobs[protocol.ids[3]].answer(Stage(ADVERTISE)))
