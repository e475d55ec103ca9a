"""The key-holder's policy, over real gRPC on localhost."""

import numpy as np
import pytest

from securefl.errors import DuplicateSubmission, InvalidInput, MalformedCiphertext, PolicyViolation
from securefl.he.codec import encrypt_chunks
from securefl.he.keys import SecretContext, load_public_context
from securefl.he.presets import get_preset
from securefl.identity import Identity, Roster, sign_receipt
from securefl.services.keyholder import KeyHolderService
from securefl.services.keyholder_client import KeyHolderClient
from securefl.services.rpc import start_server
from securefl.rounds.store import KeyHolderStore
from securefl.v1 import common_pb2

PRESET = get_preset("add-only-4096")
LENGTH = PRESET.slots + 10
SPEC = b"s" * 32


@pytest.fixture(scope="module")
def secret():
    return SecretContext.generate(PRESET)


@pytest.fixture
def keyholder(secret):
    identities = [Identity.generate(f"site-{i}") for i in range(4)]
    store = KeyHolderStore()
    service = KeyHolderService(secret, Roster.of(identities), store, min_clients=2)
    server, port = start_server(service.register, "127.0.0.1", 0)
    client = KeyHolderClient(f"127.0.0.1:{port}")
    yield client, identities, store
    client.close()
    server.stop(0)


def receipts_for(identities, round_id="round-1", **overrides):
    receipts = []
    for identity in identities:
        fields = dict(round_id=round_id, client_id=identity.client_id, scheme="ckks", spec_hash=SPEC,
                      vector_length=LENGTH, digest=b"d" * 32)
        fields.update(overrides)
        receipt = common_pb2.Receipt(**fields)
        sign_receipt(identity, receipt)
        receipts.append(receipt)
    return receipts


def aggregate_of(secret, vector):
    return encrypt_chunks(load_public_context(secret.public_bytes), vector, PRESET.slots)


def test_decrypts_an_aggregate_backed_by_enough_signed_receipts(keyholder, secret, rng):
    client, identities, store = keyholder
    vector = rng.normal(size=LENGTH)
    total = client.decrypt("round-1", LENGTH, SPEC, receipts_for(identities[:2]), aggregate_of(secret, vector))
    np.testing.assert_allclose(total, vector, atol=1e-4)
    assert [entry[2] for entry in store.audit_log()] == ["decrypted"]


def test_refuses_fewer_than_min_clients(keyholder, secret):
    client, identities, store = keyholder
    with pytest.raises(PolicyViolation, match="at least 2"):
        client.decrypt("round-1", LENGTH, SPEC, receipts_for(identities[:1]), aggregate_of(secret, np.zeros(LENGTH)))
    assert store.audit_log()[0][2] == "refused"


def test_refuses_the_same_client_counted_twice(keyholder, secret):
    client, identities, _ = keyholder
    receipts = receipts_for(identities[:1]) * 2
    with pytest.raises(PolicyViolation, match="more than once"):
        client.decrypt("round-1", LENGTH, SPEC, receipts, aggregate_of(secret, np.zeros(LENGTH)))


@pytest.mark.parametrize("override", [{"round_id": "round-2"}, {"vector_length": LENGTH + 1}, {"spec_hash": b"t" * 32}, {"scheme": "plain"}])
def test_refuses_receipts_of_another_round_model_or_length(keyholder, secret, override):
    client, identities, _ = keyholder
    with pytest.raises(PolicyViolation):
        client.decrypt("round-1", LENGTH, SPEC, receipts_for(identities[:2], **override), aggregate_of(secret, np.zeros(LENGTH)))


def test_refuses_forged_receipts(keyholder, secret):
    client, identities, _ = keyholder
    forged = receipts_for([Identity.generate(identities[0].client_id), identities[1]])
    with pytest.raises(PolicyViolation, match="not valid"):
        client.decrypt("round-1", LENGTH, SPEC, forged, aggregate_of(secret, np.zeros(LENGTH)))


def test_decrypts_each_round_once_and_repeats_only_the_identical_request(keyholder, secret):
    """A malicious aggregator cannot get a second, different decryption of a round (say the sum
    without one client: the difference is that client's update). An aggregator that crashed
    before storing the result sends the identical request again and gets the identical answer."""
    client, identities, store = keyholder
    receipts, chunks = receipts_for(identities[:3]), aggregate_of(secret, np.ones(LENGTH))
    first = client.decrypt("round-1", LENGTH, SPEC, receipts, chunks)
    assert np.array_equal(client.decrypt("round-1", LENGTH, SPEC, receipts, chunks), first)
    with pytest.raises(DuplicateSubmission, match="already decrypted"):
        client.decrypt("round-1", LENGTH, SPEC, receipts[:2], chunks)
    with pytest.raises(DuplicateSubmission, match="already decrypted"):  # the same sum, encrypted afresh
        client.decrypt("round-1", LENGTH, SPEC, receipts, aggregate_of(secret, np.ones(LENGTH)))
    assert [entry[2] for entry in store.audit_log()] == ["decrypted", "decrypted", "refused", "refused"]


def test_refuses_an_aggregate_whose_size_does_not_match_the_round(keyholder, secret):
    client, identities, _ = keyholder
    with pytest.raises(InvalidInput, match="needs 2"):
        client.decrypt("round-1", LENGTH, SPEC, receipts_for(identities[:2]), aggregate_of(secret, np.zeros(10)))
    with pytest.raises(MalformedCiphertext):
        client.decrypt("round-2", LENGTH, SPEC, receipts_for(identities[:2], round_id="round-2"), [b"junk", b"junk"])


def test_a_refused_request_does_not_use_up_the_round(keyholder, secret):
    client, identities, _ = keyholder
    with pytest.raises(PolicyViolation):
        client.decrypt("round-1", LENGTH, SPEC, receipts_for(identities[:1]), aggregate_of(secret, np.zeros(LENGTH)))
    client.decrypt("round-1", LENGTH, SPEC, receipts_for(identities[:3]), aggregate_of(secret, np.zeros(LENGTH)))
