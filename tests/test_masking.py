"""SecAgg+ building blocks and the protocol run in-process: the aggregate equals the exact sum
of the quantized updates for any participants, vector sizes and dropouts at every stage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from securefl.errors import InvalidInput, RoundClosed, RoundFailed, VerificationFailed
from securefl.identity import Identity, Roster
from securefl.masking import keys, shamir
from securefl.masking.client import SecAggParticipant
from securefl.masking.graph import choose_params, graph_seed, neighbours
from securefl.masking.prg import expand
from securefl.masking.server import ADVERTISE, MASKED, SHARE, UNMASK, SecAggScheme, secagg_config
from securefl.quantize import FixedPoint
from securefl.v1 import aggregator_pb2


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
    """One round between a SecAggScheme and participants, without the network."""

    def __init__(self, n: int, round_id: str = "r1", dropout_fraction: float = 0.1) -> None:
        self.identities = [Identity.generate(f"c{i:03d}") for i in range(n)]
        self.roster = Roster.of(self.identities)
        self.config = secagg_config(n, value_bound=10.0, max_weight=10.0, dropout_fraction=dropout_fraction)
        self.scheme = SecAggScheme(self.config, self.roster, min_clients=2, stage_timeout=3600)
        self.round_id = round_id
        self.scheme.open(round_id, n)
        self.participants = {i.client_id: SecAggParticipant(i, self.roster, self.config, round_id) for i in self.identities}

    def run(self, vectors: dict[str, np.ndarray], drops: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        scheme, rid = self.scheme, self.round_id
        alive = lambda stage: [c for c in sorted(self.participants) if drops.get(c) not in _up_to(stage)]  # noqa: E731
        for cid in alive(ADVERTISE):
            scheme.advertise(self.participants[cid].advertisement())
        scheme.expire_stage(rid, ADVERTISE)
        for cid in alive(ADVERTISE):
            self.participants[cid].accept_participants(scheme.participants(rid, cid, 0))
        for cid in alive(SHARE):
            scheme.share_keys(self.participants[cid].share_keys())
        scheme.expire_stage(rid, SHARE)
        for cid in alive(SHARE):
            self.participants[cid].accept_shares(scheme.incoming_shares(rid, cid, 0))
        accumulator, expected = scheme.new_accumulator(), None
        encoding = self.participants[alive(SHARE)[0]].encoding
        for cid in alive(MASKED):
            scheme.check_submitter(rid, cid)
            encoded = encoding.encode(vectors[cid], 1.0)
            expected = encoded.copy() if expected is None else expected + encoded
            accumulator.add([self.participants[cid].mask(encoded)])
        state = scheme.begin_unmask(rid, alive(MASKED))
        for cid in alive(UNMASK):
            scheme.unmask(self.participants[cid].unmask(scheme.unmask_request(rid, cid, 0)))
        return scheme.unmasked_total(state, accumulator), expected


def _up_to(stage: str) -> tuple[str, ...]:
    order = (ADVERTISE, SHARE, MASKED, UNMASK)
    return order[: order.index(stage) + 1]


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
    rng = np.random.default_rng(seed)
    vectors = {cid: rng.uniform(-10, 10, size=length) for cid in protocol.participants}
    total, expected = protocol.run(vectors, drops)
    assert np.array_equal(total, expected)


def test_sparse_graph_round_recovers_the_exact_sum_with_dropouts(rng):
    protocol = Protocol(60)
    k, _ = choose_params(60, 0.1, 0.1)
    assert k < 59
    ids = sorted(protocol.participants)
    drops = {ids[3]: SHARE, ids[17]: MASKED, ids[41]: MASKED, ids[50]: UNMASK}
    vectors = {cid: rng.uniform(-10, 10, size=50) for cid in ids}
    total, expected = protocol.run(vectors, drops)
    assert np.array_equal(total, expected)


def test_too_many_dropouts_abort_cleanly(rng):
    protocol = Protocol(5)  # k = 4, t = 3: one dropout tolerated
    ids = sorted(protocol.participants)
    with pytest.raises(RoundFailed, match="too many dropouts"):
        protocol.run({cid: rng.normal(size=5) for cid in ids}, {ids[0]: UNMASK, ids[1]: UNMASK})


def test_a_stage_with_too_few_clients_aborts_the_round():
    protocol = Protocol(5)
    protocol.scheme.advertise(protocol.participants["c000"].advertisement())
    protocol.scheme.expire_stage("r1", ADVERTISE)
    with pytest.raises(RoundFailed, match="advertised keys"):
        protocol.scheme.participants("r1", "c000", 0)


def _round_at_unmask(protocol: Protocol) -> SecAggParticipant:
    ids = sorted(protocol.participants)
    for cid in ids:
        protocol.scheme.advertise(protocol.participants[cid].advertisement())
    for cid in ids:
        protocol.participants[cid].accept_participants(protocol.scheme.participants("r1", cid, 0))
    for cid in ids:
        protocol.scheme.share_keys(protocol.participants[cid].share_keys())
    for cid in ids:
        protocol.participants[cid].accept_shares(protocol.scheme.incoming_shares("r1", cid, 0))
    return protocol.participants[ids[0]]


def test_clients_refuse_overlapping_or_undersized_unmask_requests():
    protocol = Protocol(5)
    client = _round_at_unmask(protocol)
    ids = sorted(protocol.participants)
    with pytest.raises(InvalidInput, match="both as survivor and as dropped"):
        client.unmask(aggregator_pb2.UnmaskRequest(survivors=ids[:4], dropped=[ids[3], ids[4]]))
    with pytest.raises(InvalidInput, match="below the threshold"):
        client.unmask(aggregator_pb2.UnmaskRequest(survivors=ids[:2], dropped=ids[2:]))
    with pytest.raises(InvalidInput, match="did not share keys"):
        client.unmask(aggregator_pb2.UnmaskRequest(survivors=ids, dropped=["stranger"]))


def test_a_client_reveals_at_most_one_secret_per_neighbour():
    protocol = Protocol(5)
    client = _round_at_unmask(protocol)
    ids = sorted(protocol.participants)
    response = client.unmask(aggregator_pb2.UnmaskRequest(survivors=ids[:4], dropped=ids[4:]))
    seeds, keys_ = {s.owner for s in response.seed_shares}, {s.owner for s in response.key_shares}
    assert not seeds & keys_ and keys_ == {ids[4]}


def test_shares_from_another_round_are_refused_by_the_recipient():
    first, second = Protocol(3, round_id="r1"), None
    _round_at_unmask(first)
    second = Protocol(3, round_id="r2")
    second.identities = first.identities
    ids = sorted(first.participants)
    for cid in ids:
        second.participants[cid] = SecAggParticipant(first.participants[cid].identity, first.roster, first.config, "r2")
    second.roster = first.roster
    second.scheme = SecAggScheme(first.config, first.roster, 2, 3600)
    second.scheme.open("r2", 3)
    for cid in ids:
        second.scheme.advertise(second.participants[cid].advertisement())
    for cid in ids:
        second.participants[cid].accept_participants(second.scheme.participants("r2", cid, 0))
    replayed = first.scheme.incoming_shares("r1", ids[0], 0)
    replayed.shared[:] = ids
    with pytest.raises(VerificationFailed):
        second.participants[ids[0]].accept_shares(replayed)


def test_late_key_messages_are_refused_after_the_stage_closed():
    protocol = Protocol(4)
    ids = sorted(protocol.participants)
    for cid in ids[:3]:
        protocol.scheme.advertise(protocol.participants[cid].advertisement())
    protocol.scheme.expire_stage("r1", ADVERTISE)
    with pytest.raises(RoundClosed, match="late"):
        protocol.scheme.advertise(protocol.participants[ids[3]].advertisement())
