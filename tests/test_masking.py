"""SecAgg+ building blocks and the protocol run in-process: the aggregate equals the exact sum
of the quantized updates for any participants, vector sizes and dropouts at every stage."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings, strategies as st

from securefl.errors import InvalidInput, RoundClosed, RoundFailed, VerificationFailed
from securefl.masking import keys, shamir
from securefl.masking.graph import choose_params, graph_seed, neighbours
from securefl.masking.policy import confirmation_quorum
from securefl.prg import BLOCK_BYTES, Keystream, apply_masks, expand
from securefl.masking.statements import share_associated_data
from securefl.masking.server import ADVERTISE, CONFIRM, MASK_SET, MASKED, SHARE, UNMASK
from securefl.quantize import FixedPoint
from securefl.rounds.inprocess import InProcessFederation
from securefl.rounds.scheme import RoundConfig, Stage
from securefl.v1 import secagg_pb2
from tests.secagg_rounds import TEST_SECURITY, Enrolment, HandRound


# -- fixed point --------------------------------------------------------------------------

def test_encoding_round_trips_within_its_resolution(rng):
    encoding = FixedPoint.for_round(10, value_bound=5.0, max_weight=4.0)
    values = rng.uniform(-5, 5, size=1000)
    decoded = encoding.decode(encoding.encode(values, 3.0))
    assert np.all(np.abs(decoded[:-1] - 3.0 * values) <= 2.0**-encoding.frac_bits) and decoded[-1] == 3.0


def test_an_update_longer_than_one_encoding_block_round_trips(rng):
    encoding = FixedPoint.for_round(10, value_bound=1.0, max_weight=2.0)
    values = rng.uniform(-1.5, 1.5, size=100_003).astype(np.float32)  # float32 in, several blocks, clipped
    decoded = encoding.decode(encoding.encode(values, 2.0))
    expected = 2.0 * np.clip(values.astype(np.float64), -1.0, 1.0)
    assert np.all(np.abs(decoded[:-1] - expected) <= 2.0**-encoding.frac_bits) and decoded[-1] == 2.0


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


def aes256_ctr_from_zero(seed: bytes, length: int) -> bytes:
    """The reference keystream: AES-256-CTR, counter blocks 0, 1, 2, ... (what other
    implementations of securefl's masks must reproduce)."""
    return Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(length))


def read_in_pieces(stream: Keystream, pieces: list[int]) -> bytes:
    out = b""
    for length in pieces:
        buffer = np.empty(length + 16, np.uint8)
        stream.read_into(buffer, length)
        out += buffer[:length].tobytes()
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=6))
def test_keystreams_are_aes256_ctr_from_block_zero_however_they_are_read(pieces):
    seed = bytes(range(32))
    assert read_in_pieces(Keystream(seed), pieces) == aes256_ctr_from_zero(seed, sum(pieces))
    assert expand(seed, 1000, np.uint32).tobytes() == aes256_ctr_from_zero(seed, 4000)


@pytest.mark.parametrize("segment", [32, 48, 4096])
def test_keystreams_continue_with_ctr_where_gcm_would_stop(monkeypatch, segment):
    """Past GCM's block limit (2^36 bytes, too long for a test; moved here to `segment`) the
    stream goes on with CTR at the same counter block."""
    monkeypatch.setattr(Keystream, "SEGMENT_BYTES", segment)
    seed = b"s" * 32
    pieces = [7, 30, 11, 1, 15, segment, 3 * segment + 5]
    assert read_in_pieces(Keystream(seed), pieces) == aes256_ctr_from_zero(seed, sum(pieces))


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_block_by_block_masks_equal_whole_keystreams_added_and_subtracted(dtype):
    count = 3 * BLOCK_BYTES // np.dtype(dtype).itemsize + 12_345  # blocks that do not divide the update
    values = np.arange(count, dtype=dtype)
    plus, minus = [b"a" * 32, b"b" * 32], [b"c" * 32]
    expected = values + expand(plus[0], count, dtype) + expand(plus[1], count, dtype) - expand(minus[0], count, dtype)
    apply_masks(values, plus, minus)
    assert np.array_equal(values, expected)
    apply_masks(values, minus, plus)
    assert np.array_equal(values, np.arange(count, dtype=dtype))


def test_masks_apply_only_to_contiguous_unsigned_integers():
    with pytest.raises(ValueError):
        apply_masks(np.zeros(10, np.int32), [b"a" * 32])
    with pytest.raises(ValueError):
        apply_masks(np.zeros(10, np.uint32)[::2], [b"a" * 32])


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
    graph = neighbours(ids, k, graph_seed(b"view"))
    assert all(len(peers) == k and cid not in peers for cid, peers in graph.items())
    assert all(cid in graph[peer] for cid, peers in graph.items() for peer in peers)
    assert neighbours(ids, k, graph_seed(b"view")) == graph != neighbours(ids, k, graph_seed(b"other view"))


def test_a_share_sealed_for_one_round_view_and_holder_opens_for_no_other():
    a, b = keys.new_private_key(), keys.new_private_key()
    key_r1 = keys.derive(a, keys.public_bytes(b), keys.SHARE_KEY_LABEL, "r1", "alice", "bob")
    share = secagg_pb2.EncryptedShare(sender="alice", recipient="bob", seed_commitment=b"s" * 32, key_commitment=b"k" * 32)
    sealed = keys.seal_share(key_r1, b"share", share_associated_data("r1", b"view", share))
    assert keys.open_share(key_r1, sealed, share_associated_data("r1", b"view", share), "alice") == b"share"
    key_r2 = keys.derive(a, keys.public_bytes(b), keys.SHARE_KEY_LABEL, "r2", "alice", "bob")
    other_commitment = secagg_pb2.EncryptedShare(sender="alice", recipient="bob", seed_commitment=b"x" * 32,
                                                 key_commitment=b"k" * 32)
    for key, round_id, view, claimed in ((key_r2, "r2", b"view", share), (key_r1, "r2", b"view", share),
                                         (key_r1, "r1", b"other view", share), (key_r1, "r1", b"view", other_commitment)):
        with pytest.raises(VerificationFailed):
            keys.open_share(key, sealed, share_associated_data(round_id, view, claimed), "alice")


# -- the protocol, in process -------------------------------------------------------------

class Protocol:
    """SecAgg+ rounds through the round engine and the scheme's two halves, without the network."""

    def __init__(self, n: int) -> None:
        self.enrolment = Enrolment(n)
        clients = {i.client_id: self.enrolment.client(i) for i in self.enrolment.identities}
        self.federation = InProcessFederation.start(self.enrolment.server, clients, self.enrolment.identities,
                                                    RoundConfig(2, n), self.enrolment.clock, step_seconds=31)
        self.ids = self.enrolment.ids

    def exact_vectors(self, rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
        """Updates on the encoding's grid, so stochastic rounding is exact and sums are known."""
        step = 2.0 ** -self.enrolment.config.frac_bits
        return {cid: rng.integers(-2**20, 2**20, size=length) * step for cid in self.ids}

    def run(self, vectors: dict[str, np.ndarray], drops: dict[str, str], round_id: str = "r1") -> np.ndarray:
        return self.federation.run(round_id, vectors, {cid: 1.0 for cid in vectors}, drops).average


def expected_average(vectors: dict[str, np.ndarray], contributors: list[str], dtype: np.dtype) -> np.ndarray:
    """The exact average, in the dtype the engine publishes (float32 holds every digit the
    fixed-point encoding has)."""
    return (sum(vectors[cid] for cid in contributors) / len(contributors)).astype(dtype)


LATE_STAGES = (SHARE, MASK_SET, MASKED, CONFIRM, UNMASK)


def tolerable_late_dropouts(n: int) -> int:
    """Dropouts after advertising that a round of n participants always survives: at most
    k - t neighbours of anyone, and a confirmation quorum left."""
    k, t = choose_params(n, TEST_SECURITY.dropout_fraction, TEST_SECURITY.corrupt_fraction)
    return min(k - t, n - confirmation_quorum(n, t, TEST_SECURITY.corrupt_fraction))


@st.composite
def rounds_with_tolerable_dropouts(draw):
    n = draw(st.integers(3, 10))
    early = draw(st.integers(0, n - 3))  # drop before advertising: they never join the graph
    late = draw(st.integers(0, tolerable_late_dropouts(n - early)))
    stages = draw(st.lists(st.sampled_from(LATE_STAGES), min_size=late, max_size=late))
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
    contributors = [cid for cid in protocol.ids if drops.get(cid) not in (ADVERTISE, SHARE, MASK_SET, MASKED)]
    assert np.array_equal(protocol.run(vectors, drops), expected_average(vectors, contributors, protocol.enrolment.server.result_dtype))


def test_sparse_graph_round_recovers_the_exact_sum_with_dropouts(rng):
    protocol = Protocol(60)
    k, _ = choose_params(60, 0.1, 0.1)
    assert k < 59
    ids = protocol.ids
    drops = {ids[3]: SHARE, ids[9]: MASK_SET, ids[17]: MASKED, ids[41]: MASKED, ids[44]: CONFIRM, ids[50]: UNMASK}
    vectors = protocol.exact_vectors(rng, 50)
    contributors = [cid for cid in ids if drops.get(cid) not in (SHARE, MASK_SET, MASKED)]
    assert np.array_equal(protocol.run(vectors, drops), expected_average(vectors, contributors, protocol.enrolment.server.result_dtype))


def test_too_many_dropouts_abort_cleanly(rng):
    protocol = Protocol(5)  # k = 4, t = 3: one dropout tolerated
    ids = protocol.ids
    with pytest.raises(RoundFailed, match="too many dropouts"):
        protocol.run(protocol.exact_vectors(rng, 5), {ids[0]: UNMASK, ids[1]: UNMASK})


def test_too_few_confirmations_abort_before_anyone_reveals(rng):
    protocol = Protocol(5)  # quorum 4 of 5
    ids = protocol.ids
    with pytest.raises(RoundFailed, match="confirmed the survivor set; 4 are needed"):
        protocol.run(protocol.exact_vectors(rng, 5), {ids[0]: CONFIRM, ids[1]: CONFIRM})


def test_a_stage_with_too_few_clients_aborts_the_round(rng):
    protocol = Protocol(5)
    with pytest.raises(RoundFailed, match="advertised keys"):
        protocol.run(protocol.exact_vectors(rng, 5), {cid: ADVERTISE for cid in protocol.ids[1:]})


def test_late_key_messages_are_refused_after_the_stage_closed():
    enrolment = Enrolment(4)
    hand = HandRound(enrolment)
    for cid in enrolment.ids[:3]:
        hand.play(cid)
    enrolment.clock.advance(31)
    hand.round.tick(enrolment.clock())
    with pytest.raises(RoundClosed, match="late"):
        hand.round.answer(enrolment.ids[3], ADVERTISE, hand.jobs[enrolment.ids[3]].answer(Stage(ADVERTISE)))


def test_each_honest_client_reveals_one_secret_per_neighbour_and_the_sum_is_exact(rng):
    enrolment = Enrolment(6)
    step = 2.0 ** -enrolment.config.frac_bits
    vectors = {cid: rng.integers(-1000, 1000, size=4) * step for cid in enrolment.ids}
    gone = enrolment.ids[5]
    hand = HandRound(enrolment, vectors=vectors).until(MASKED)
    live = enrolment.ids[:5]
    hand.until(UNMASK, live)  # the last client shared keys, then vanished before its mask set
    for cid in live:
        hand.play(cid)
    for response in hand.round.reveals.values():
        seeds, keys_ = {s.owner for s in response.seed_shares}, {s.owner for s in response.key_shares}
        assert not seeds & keys_ and keys_ == {gone}
    total = hand.reveal()
    assert np.array_equal(total[:-1], sum(vectors[cid] for cid in live)) and total[-1] == 5.0
