"""The key-recovery attacks of issue 8, and the aggregator's other ways to misuse the key-holder,
played over the real services: a LocalFederation's key-holder and aggregator processes, mutual
TLS, federation.json.

* A malicious enrolled client submits `c1 + K` through the real aggregator, beside honest
  clients of the library.
* The aggregator alone, with its own enrolled certificate, registers a round, collects the honest
  clients' submissions and receipts, and sends the key-holder something other than their sum:
  `(0, K)`, the sum plus `(0, K)`, one client's ciphertext with every receipt, the sum with a
  subset of the receipts, or twice the sum.

Each ends with no useful release (PolicyViolation, nothing returned), an audit entry that names
the receipts, and a retired key epoch; honest clients then complete the next round under a new
epoch without re-pinning anything."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from securefl.errors import PermissionDenied, PolicyViolation
from securefl.he.epochs import EpochVerifier
from securefl.identity import Identity, sign_receipt
from securefl.pki import AGGREGATOR, KEYHOLDER, SITE
from securefl.rounds.chunks import ChunkDigest
from securefl.rounds.scheme import SUBMIT, Stage, signed_receipt
from securefl.schemes import ClientPins, client_scheme
from securefl.services.keyholder_client import KeyHolderClient
from securefl.simulation import LocalFederation, SecAggSettings
from securefl.tensors import flatten
from securefl.v1 import common_pb2
from tests.conftest import run_round
from tests.he_attacks import key_term
from tests.submissions import RawAggregator, Submission

VALUES = 2000  # one ciphertext in either scheme
SPEC = flatten(np.zeros(VALUES))[1].hash  # what the library's clients send for a float64 vector
_round_ids = (f"attacked-{i}" for i in itertools.count())


@pytest.fixture(scope="module", params=["bfv", "ckks"])
def federation(request):
    with LocalFederation(4, scheme=request.param, min_clients=2,
                         secagg=SecAggSettings(value_bound=4.0, max_weight=10.0)) as fed:
        yield fed


@pytest.fixture(scope="module")
def raw(federation):
    return RawAggregator(federation)


@pytest.fixture(scope="module")
def rogue_aggregator(federation):
    """The aggregator's own enrolled certificate, used by an aggregator that deviates."""
    client = KeyHolderClient(federation.keyholder_address, federation.credentials(AGGREGATOR, "aggregator"),
                             server=federation.federation.party(KEYHOLDER))
    yield client
    client.close()


def inputs(seed: int, n: int = 4) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=VALUES) for _ in range(n)], [1.0 + i for i in range(n)]


def honest_submission(federation: LocalFederation, raw: RawAggregator, identity: Identity, round_id: str,
                      epoch: common_pb2.PublicEpoch, vector: np.ndarray, weight: float) -> Submission:
    """What an honest client sends for this round: the library's client half, its signed receipt."""
    scheme = client_scheme(raw.session, identity, ClientPins(federation.federation))
    protected = scheme.start(round_id, vector, weight).protect(Stage(SUBMIT, epoch.SerializeToString()))
    receipt = signed_receipt(identity, round_id, federation.scheme, SPEC, protected)
    return Submission(receipt, protected.chunks)


def attack_polynomial(degree: int, seed: int) -> np.ndarray:
    """A K of the attacker's choice: random coefficients below the ciphertext modulus."""
    return np.random.default_rng(seed).integers(0, 2**59, degree, dtype=np.uint64)


def assert_refused_and_rotated(federation: LocalFederation, round_id: str, epoch: int, receipted: list[str]) -> None:
    """The audit names the receipts and the retired epoch; honest clients then complete a round
    under a newer epoch."""
    entry = federation.audit_log()[-1]
    assert (entry["round"], entry["decision"]) == (round_id, "refused after decryption")
    assert f"key epoch {epoch} retired" in entry["detail"]
    assert all(f"{client_id}#" in entry["detail"] for client_id in receipted)
    assert "aggregator aggregator" in entry["requester"]

    next_round = next(_round_ids)
    vectors, weights = inputs(99)
    results = run_round(federation.clients, vectors, weights, round_id=next_round)
    expected = sum(v * w for v, w in zip(vectors, weights)) / sum(weights)
    assert np.abs(results[0] - expected).max() < 1e-2
    released = federation.audit_log()[-1]
    assert (released["round"], released["decision"]) == (next_round, "released")
    assert int(re.search(r"key epoch (\d+)", released["detail"]).group(1)) > epoch


def test_a_malicious_client_submitting_c1_plus_k_gets_nothing_and_the_key_rotates(federation, raw):
    round_id = next(_round_ids)
    mallory = federation.identities[0]
    vectors, weights = inputs(1)
    epoch = raw.round_epoch(round_id)  # Mallory asks for the round's stage like anyone else
    submission = honest_submission(federation, raw, mallory, round_id, epoch.message, vectors[0], weights[0])
    poisoned = epoch.codec.parse_chunk(epoch.context, submission.chunks[0])
    degree = epoch.codec.preset.poly_modulus_degree
    poisoned.add_(epoch.codec.parse_chunk(epoch.context, key_term(poisoned, attack_polynomial(degree, 5))))
    submission.chunks[0] = poisoned.serialize()
    submission.receipt.digest = ChunkDigest.of(submission.chunks)
    sign_receipt(mallory, submission.receipt)  # Mallory signs what she sends
    raw.submit(submission)  # a well-formed ciphertext of the round's epoch: the aggregator cannot tell

    with pytest.raises(PolicyViolation, match="not the honest sum"):
        run_round(federation.clients[1:], vectors[1:], weights[1:], round_id=round_id)
    assert_refused_and_rotated(federation, round_id, epoch.number, [i.client_id for i in federation.identities])


def _zero_k_instead_of_the_sum(sums, submissions, codec, context):
    degree = codec.preset.poly_modulus_degree
    return [key_term(total, attack_polynomial(degree, i)) for i, total in enumerate(sums)], submissions


def _the_sum_plus_zero_k(sums, submissions, codec, context):
    for total in sums:
        total.add_(codec.parse_chunk(context, key_term(total, attack_polynomial(codec.preset.poly_modulus_degree, 7))))
    return [total.serialize() for total in sums], submissions


def _one_clients_ciphertext_with_every_receipt(sums, submissions, codec, context):
    return submissions[0].chunks, submissions


def _the_sum_with_a_subset_of_the_receipts(sums, submissions, codec, context):
    return [total.serialize() for total in sums], submissions[:2]


def _twice_the_sum(sums, submissions, codec, context):
    for total in sums:
        total.add_(total.copy())
    return [total.serialize() for total in sums], submissions


ATTACKS = {f.__name__.strip("_"): f for f in (
    _zero_k_instead_of_the_sum, _the_sum_plus_zero_k, _one_clients_ciphertext_with_every_receipt,
    _the_sum_with_a_subset_of_the_receipts, _twice_the_sum,
)}


@pytest.mark.parametrize("attack", ATTACKS, ids=ATTACKS.keys())
def test_the_aggregator_alone_gets_nothing_from_a_crafted_decryption_request(federation, raw, rogue_aggregator,
                                                                              attack):
    round_id = next(_round_ids)
    registered = rogue_aggregator.public_epoch_for_round(round_id)
    epoch = EpochVerifier(federation.federation.keyholder.public_key).verify(registered)
    vectors, weights = inputs(2)
    submissions = [honest_submission(federation, raw, identity, round_id, registered, v, w)
                   for identity, v, w in zip(federation.identities, vectors, weights)]
    sums = [epoch.codec.parse_chunk(epoch.context, chunk) for chunk in submissions[0].chunks]
    for submission in submissions[1:]:
        for total, chunk in zip(sums, submission.chunks):
            total.add_(epoch.codec.parse_chunk(epoch.context, chunk))

    chunks, receipted = ATTACKS[attack](sums, submissions, epoch.codec, epoch.context)
    receipts = [s.receipt for s in receipted]
    with pytest.raises(PolicyViolation, match="not the honest sum") as refused:
        rogue_aggregator.release(round_id, VALUES + 1, SPEC, receipts, chunks)
    assert f"key epoch {epoch.number} is retired" in str(refused.value)
    assert rogue_aggregator.current_epoch().epoch > epoch.number
    assert_refused_and_rotated(federation, round_id, epoch.number, [r.client_id for r in receipts])


def test_a_site_cannot_ask_the_keyholder_anything_but_the_current_epoch(federation):
    site = KeyHolderClient(federation.keyholder_address, federation.credentials(SITE, "site-1"),
                           server=federation.federation.party(KEYHOLDER))
    EpochVerifier(federation.federation.keyholder.public_key).verify(site.current_epoch())
    with pytest.raises(PermissionDenied, match="only the aggregator"):
        site.public_epoch_for_round(next(_round_ids))
    site.close()
