"""The key-holder releases the honest sum of exactly the receipted clients, or nothing — played
against a malicious aggregator and malicious clients at the core level (the same attacks over
real gRPC come with the services, in phase 2)."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from securefl.errors import DuplicateSubmission, InvalidInput, MalformedCiphertext, PolicyViolation, VerificationFailed
from securefl.he.codec import decrypt_chunks
from securefl.he.epochs import EpochSettings
from securefl.he.masks import seal_seed, uniform_reals
from securefl.identity import Identity, sign_receipt
from securefl.rounds.chunks import ChunkDigest
from tests.he_attacks import key_term
from tests.he_rounds import SPEC, HeFederation, he_federation, weighted_sum

SCHEMES = {"bfv": "bfv-8192", "ckks": "add-only-8192"}
LENGTH = 5001  # 5,000 values and the weight: one BFV ciphertext (k = 2), two CKKS ones
BOUND = 4.0


@pytest.fixture(params=sorted(SCHEMES))
def federation(request, tmp_path) -> HeFederation:
    return he_federation(tmp_path / "keystore.bin", request.param, SCHEMES[request.param], value_bound=BOUND)


@pytest.fixture
def bfv(tmp_path) -> HeFederation:
    return he_federation(tmp_path / "keystore.bin", "bfv", SCHEMES["bfv"], value_bound=BOUND)


def round_inputs(seed: int = 0, clients: int = 4) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=LENGTH - 1) for _ in range(clients)], [1.0 + i for i in range(clients)]


def keyholder_codec(federation: HeFederation, round_id: str):
    """The codec the key-holder reveals with (CKKS flooding is sized for rotate_every releases)."""
    return EpochSettings.of(federation.epoch(round_id).message).codec(federation.keystore.policy.rotate_every)


def tolerance(federation: HeFederation, round_id: str, clients: int) -> float:
    """BFV: stochastic rounding, one step per client; CKKS: flooding (6 sigma) plus error."""
    codec = keyholder_codec(federation, round_id)
    if codec.scheme == "bfv":
        return clients / codec.plan.scale
    return 6 * codec.flooding_sigma(clients, LENGTH) + codec.tolerance(clients)


def assert_honest_round(federation: HeFederation, round_id: str, seed: int = 1) -> np.ndarray:
    vectors, weights = round_inputs(seed)
    submissions = federation.submit_all(round_id, vectors, weights)
    released = federation.release(round_id, LENGTH, submissions, federation.honest_aggregate(round_id, submissions))
    expected = weighted_sum(vectors, weights, BOUND)
    assert np.abs(released - expected).max() <= tolerance(federation, round_id, len(vectors))
    assert federation.audit.decisions[-1] == "released"
    return released


def assert_refused_and_rotated(federation: HeFederation, round_id: str, submissions, chunks) -> None:
    """Nothing released, an audit entry naming the receipts, the epoch's keys gone, and the
    next round runs under a new epoch that honest clients accept without re-pinning."""
    epoch = federation.epoch(round_id).number
    with pytest.raises(PolicyViolation, match="not the honest sum") as refusal:
        federation.release(round_id, LENGTH, submissions, chunks)
    assert "retired" in str(refusal.value)
    round_id_, decision, detail = federation.audit.entries[-1]
    assert (round_id_, decision) == (round_id, "refused after decryption")
    assert all(s.receipt.client_id in detail for s in submissions)
    assert epoch not in federation.keystore.epoch_numbers()
    assert federation.keystore.current.number > epoch
    assert_honest_round(federation, f"{round_id}-rerun")
    assert federation.epoch(f"{round_id}-rerun").number > epoch


def attack_polynomial(federation: HeFederation, seed: int = 5) -> np.ndarray:
    """A K of the attacker's choice: random coefficients below the ciphertext modulus."""
    degree = federation.epoch("r1").codec.preset.poly_modulus_degree
    return np.random.default_rng(seed).integers(0, 2**59, degree, dtype=np.uint64)


# -- honest rounds ----------------------------------------------------------------------------------

def test_honest_rounds_release_the_weighted_sum(federation):
    released = assert_honest_round(federation, "r1")
    assert released.size == LENGTH
    assert federation.keystore.current.number == 1


def test_bfv_releases_the_exact_sum_of_exactly_representable_updates(bfv):
    scale = bfv.epoch("r1").codec.plan.scale
    rng = np.random.default_rng(3)
    vectors = [rng.integers(-int(BOUND * scale), int(BOUND * scale), LENGTH - 1) / scale for _ in range(4)]
    weights = [1.0, 2.0, 3.0, 4.0]
    submissions = bfv.submit_all("r1", vectors, weights)
    released = bfv.release("r1", LENGTH, submissions, bfv.honest_aggregate("r1", submissions))
    np.testing.assert_array_equal(released, weighted_sum(vectors, weights, BOUND))


def test_a_quorum_below_all_enrolled_clients_releases_their_sum(federation):
    vectors, weights = round_inputs(clients=3)
    submissions = federation.submit_all("r1", vectors, weights)
    released = federation.release("r1", LENGTH, submissions, federation.honest_aggregate("r1", submissions))
    assert np.abs(released - weighted_sum(vectors, weights, BOUND)).max() <= tolerance(federation, "r1", 3)


# -- the attacks of issue 8 -------------------------------------------------------------------------

def test_a_malicious_client_submitting_c1_plus_k_gets_nothing_and_the_key_rotates(federation):
    vectors, weights = round_inputs()
    submissions = federation.submit_all("r1", vectors, weights)
    epoch = federation.epoch("r1")
    mallory = submissions[0]
    poisoned = epoch.codec.parse_chunk(epoch.context, mallory.chunks[0])
    poisoned.add_(epoch.codec.parse_chunk(epoch.context, key_term(poisoned, attack_polynomial(federation))))
    mallory.chunks = [poisoned.serialize(), *mallory.chunks[1:]]
    mallory.receipt.digest = ChunkDigest.of(mallory.chunks)
    sign_receipt(federation.identities[0], mallory.receipt)  # Mallory signs what she sends
    aggregate = [t.serialize() for t in federation.add_up("r1", [s.chunks for s in submissions])]
    assert_refused_and_rotated(federation, "r1", submissions, aggregate)


def test_the_aggregator_sending_0_k_instead_of_the_sum_gets_nothing(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    template = federation.add_up("r1", [submissions[0].chunks])
    crafted = [key_term(t, attack_polynomial(federation, seed=i)) for i, t in enumerate(template)]
    assert_refused_and_rotated(federation, "r1", submissions, crafted)


def test_the_aggregator_sending_the_sum_plus_0_k_gets_nothing(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    sums = federation.add_up("r1", [s.chunks for s in submissions])
    epoch = federation.epoch("r1")
    for total in sums:
        total.add_(epoch.codec.parse_chunk(epoch.context, key_term(total, attack_polynomial(federation))))
    assert_refused_and_rotated(federation, "r1", submissions, [t.serialize() for t in sums])


def test_one_clients_ciphertext_with_everyones_receipts_releases_nothing(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    assert_refused_and_rotated(federation, "r1", submissions, submissions[0].chunks)


def test_the_sum_of_all_with_a_subset_of_receipts_releases_nothing(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    assert_refused_and_rotated(federation, "r1", submissions[:3], federation.honest_aggregate("r1", submissions))


def test_the_sum_of_a_subset_with_all_receipts_releases_nothing(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    assert_refused_and_rotated(federation, "r1", submissions, federation.honest_aggregate("r1", submissions[:3]))


def test_a_scaled_sum_releases_nothing(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    sums = federation.add_up("r1", [s.chunks for s in submissions])
    for total in sums:
        total.add_(total.copy())  # 2 x the sum
    assert_refused_and_rotated(federation, "r1", submissions, [t.serialize() for t in sums])


def test_a_slot_selected_bfv_sum_releases_nothing(bfv):
    submissions = bfv.submit_all("r1", *round_inputs())
    sums = bfv.add_up("r1", [s.chunks for s in submissions])
    selector = [1, 0] * (bfv.epoch("r1").codec.slots // 2)  # keep every other slot: needs only the public key
    sums[0].mul_(selector)
    assert_refused_and_rotated(bfv, "r1", submissions, [t.serialize() for t in sums])


def test_a_bfv_key_term_that_rounds_away_releases_only_the_honest_sum(bfv):
    """The one bit an adversary can get without a refusal: whether K·s vanished in the rounding.
    What is released is then exactly the honest sum; nothing of the key comes out."""
    vectors = [np.full(LENGTH - 1, 0.5), np.full(LENGTH - 1, -0.25)]
    submissions = [bfv.submit("r1", i, v, 2.0) for i, v in zip(bfv.identities, vectors)]
    sums = bfv.add_up("r1", [s.chunks for s in submissions])
    tiny = np.zeros(bfv.epoch("r1").codec.slots, dtype=np.uint64)
    tiny[0] = 1  # K = 1: K·s has coefficients in {-1, 0, 1}, far below q / 2t
    sums[0].add_(bfv.epoch("r1").codec.parse_chunk(bfv.epoch("r1").context, key_term(sums[0], tiny)))
    released = bfv.release("r1", LENGTH, submissions, [t.serialize() for t in sums])
    np.testing.assert_array_equal(released, weighted_sum(vectors, [2.0, 2.0], BOUND))
    assert bfv.keystore.current.number == 1


def test_bfv_refuses_a_constant_key_term_that_ckks_would_release(bfv):
    """The same small perturbation that passes CKKS's checks (next test) is refused by BFV:
    K·s rounds to a nonzero polynomial that batching spreads over every slot."""
    submissions = bfv.submit_all("r1", *round_inputs())
    sums = bfv.add_up("r1", [s.chunks for s in submissions])
    constant = np.zeros(bfv.epoch("r1").codec.slots, dtype=np.uint64)
    constant[0] = 2**24
    sums[0].add_(bfv.epoch("r1").codec.parse_chunk(bfv.epoch("r1").context, key_term(sums[0], constant)))
    assert_refused_and_rotated(bfv, "r1", submissions, [t.serialize() for t in sums])


def test_ckks_releases_a_small_key_term_added_to_the_sum_which_is_why_bfv_exists(tmp_path):
    """What CKKS still leaks under active attack (ckks.py): sum + (0, c) with a small constant
    c passes every range check of a vector that fills its ciphertexts (no padding slots to
    check against zero), and the release carries c·s/Δ, far above the flooding."""
    ckks = he_federation(tmp_path / "keystore.bin", "ckks", SCHEMES["ckks"], value_bound=BOUND)
    codec = ckks.epoch("r1").codec
    length = 2 * codec.slots
    rng = np.random.default_rng(0)
    vectors, weights = [rng.normal(size=length - 1) for _ in range(4)], [1.0, 2.0, 3.0, 4.0]
    submissions = ckks.submit_all("r1", vectors, weights)
    sums = ckks.add_up("r1", [s.chunks for s in submissions])
    constant = np.full(codec.preset.poly_modulus_degree, 2**24, dtype=np.uint64)  # NTT form of the constant 2^24
    for total in sums:
        total.add_(codec.parse_chunk(ckks.epoch("r1").context, key_term(total, constant)))
    released = ckks.core.release("r1", length, SPEC, [s.receipt for s in submissions], [t.serialize() for t in sums])
    leak = released - weighted_sum(vectors, weights, BOUND)
    assert np.std(leak) > 100 * keyholder_codec(ckks, "r1").flooding_sigma(4, length)
    assert ckks.keystore.current.number == 1  # accepted: no rotation


def test_ckks_release_carries_the_stated_flooding_noise(tmp_path):
    ckks = he_federation(tmp_path / "keystore.bin", "ckks", SCHEMES["ckks"], value_bound=BOUND)
    vectors, weights = round_inputs()
    submissions = ckks.submit_all("r1", vectors, weights)
    released = ckks.release("r1", LENGTH, submissions, ckks.honest_aggregate("r1", submissions))
    codec = keyholder_codec(ckks, "r1")
    sigma = codec.flooding_sigma(4, LENGTH)
    noise = released - weighted_sum(vectors, weights, BOUND)
    assert codec.error_std(4) * 20 < sigma  # the flood dwarfs the decryption error...
    assert 0.9 < np.std(noise) / sigma < 1.1 and abs(np.mean(noise)) < 4 * sigma / np.sqrt(LENGTH)  # ...and is there


def test_ckks_fresh_errors_stay_below_the_bound_the_flooding_is_sized_for(tmp_path):
    ckks = he_federation(tmp_path / "keystore.bin", "ckks", SCHEMES["ckks"], value_bound=BOUND)
    epoch = ckks.epoch("r1")
    codec, seeds = epoch.codec, [bytes([i]) * 32 for i in range(4)]
    chunk_lists = [codec.protect(epoch.context, np.zeros(LENGTH - 1), 1.0, seed) for seed in seeds]
    sums = ckks.add_up("r1", chunk_lists)
    decrypted = decrypt_chunks(ckks.keystore.current.secret.context, sums)
    error = decrypted - sum(uniform_reals(s, decrypted.size, codec.mask_bound) for s in seeds)
    error[LENGTH - 1] -= 4.0  # the weights
    assert np.std(error) < codec.error_std(4) and np.abs(error).max() < codec.tolerance(4)


# -- refusals before any decryption: audited, the key untouched, the round still usable ---------------

def assert_refused_before_decryption(federation: HeFederation, error: type, round_id: str, submissions, chunks,
                                     length: int = LENGTH) -> None:
    epoch = federation.keystore.current.number
    with pytest.raises(error):
        federation.core.release(round_id, length, b"s" * 32, [s.receipt for s in submissions], chunks)
    assert federation.audit.decisions[-1] == "refused"
    assert federation.keystore.current.number == epoch and epoch in federation.keystore.epoch_numbers()


def test_forged_duplicate_and_too_few_receipts_are_refused_before_decryption(bfv):
    submissions = bfv.submit_all("r1", *round_inputs())
    aggregate = bfv.honest_aggregate("r1", submissions)
    forged = bfv.submit("r1", bfv.identities[0], np.zeros(LENGTH - 1), 1.0)
    sign_receipt(Identity(bfv.identities[0].client_id, Identity.generate("x").private_key), forged.receipt)
    assert_refused_before_decryption(bfv, PolicyViolation, "r1", [forged, *submissions[1:]], aggregate)
    assert_refused_before_decryption(bfv, PolicyViolation, "r1", [submissions[0], submissions[0]], aggregate)
    assert_refused_before_decryption(bfv, PolicyViolation, "r1", submissions[:1], aggregate)
    assert_refused_before_decryption(bfv, PolicyViolation, "r1", submissions, aggregate, length=LENGTH + 1)
    bfv.release("r1", LENGTH, submissions, aggregate)  # the round was not used up


def test_receipts_of_another_key_epoch_are_refused_before_decryption(bfv):
    submissions = bfv.submit_all("r1", *round_inputs())
    for submission, identity in zip(submissions, bfv.identities):
        submission.receipt.key_epoch += 1
        sign_receipt(identity, submission.receipt)
    assert_refused_before_decryption(bfv, PolicyViolation, "r1", submissions, bfv.honest_aggregate("r1", submissions))


def test_the_aggregator_cannot_swap_sealed_seeds_between_receipts(bfv):
    submissions = bfv.submit_all("r1", *round_inputs())
    a, b = submissions[0].receipt, submissions[1].receipt
    a.sealed_seed, b.sealed_seed = b.sealed_seed, a.sealed_seed
    assert_refused_before_decryption(bfv, PolicyViolation, "r1", submissions, bfv.honest_aggregate("r1", submissions))


def test_a_seed_sealed_for_another_round_does_not_open(bfv):
    submissions = bfv.submit_all("r1", *round_inputs())
    epoch = bfv.epoch("r1")
    receipt = submissions[0].receipt
    receipt.sealed_seed = seal_seed(bytes(32), epoch.sealing_public_key, "r0", receipt.client_id, epoch.number)
    sign_receipt(bfv.identities[0], receipt)
    assert_refused_before_decryption(bfv, VerificationFailed, "r1", submissions, bfv.honest_aggregate("r1", submissions))


def test_malformed_or_miscounted_aggregates_are_refused_before_decryption(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    aggregate = federation.honest_aggregate("r1", submissions)
    assert_refused_before_decryption(federation, InvalidInput, "r1", submissions, aggregate + aggregate[:1])
    assert_refused_before_decryption(federation, MalformedCiphertext, "r1", submissions, [b"junk"] * len(aggregate))


def test_a_round_is_decrypted_once_and_only_if_registered(federation):
    submissions = federation.submit_all("r1", *round_inputs())
    aggregate = federation.honest_aggregate("r1", submissions)
    federation.release("r1", LENGTH, submissions, aggregate)
    assert_refused_before_decryption(federation, DuplicateSubmission, "r1", submissions, aggregate)
    with pytest.raises(DuplicateSubmission):
        federation.core.public_epoch_for_round("r1")
    assert_refused_before_decryption(federation, PolicyViolation, "never-opened", submissions, aggregate)


def test_a_ckks_chunk_at_another_scale_is_refused(tmp_path):
    ckks = he_federation(tmp_path / "keystore.bin", "ckks", SCHEMES["ckks"], value_bound=BOUND)
    submissions = ckks.submit_all("r1", *round_inputs())
    epoch = ckks.epoch("r1")
    off_scale = ts.ckks_vector(epoch.context, [1.0] * epoch.codec.slots, scale=2.0**20).serialize()
    aggregate = ckks.honest_aggregate("r1", submissions)
    assert_refused_before_decryption(ckks, MalformedCiphertext, "r1", submissions, [off_scale, *aggregate[1:]])
