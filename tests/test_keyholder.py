"""The key-holder's policy and who may ask it, over real gRPC with mutual TLS on localhost."""

import dataclasses

import grpc
import numpy as np
import pytest

from securefl.enrolment import create_federation, ephemeral_credentials, issue_credentials
from securefl.errors import (
    DuplicateSubmission, InvalidInput, MalformedCiphertext, PermissionDenied, PolicyViolation,
)
from securefl.he.codec import encrypt_chunks
from securefl.he.keys import SecretContext, load_public_context
from securefl.he.presets import get_preset
from securefl.identity import Identity, sign_receipt
from securefl.pki import AGGREGATOR, KEYHOLDER, SITE, PartyName
from securefl.services.keyholder import KeyHolderService
from securefl.services.keyholder_client import KeyHolderClient
from securefl.services.rpc import channel, start_server
from securefl.rounds.store import KeyHolderStore
from securefl.v1 import common_pb2, keyholder_pb2, keyholder_pb2_grpc

PRESET = get_preset("add-only-4096")
LENGTH = PRESET.slots + 10
SPEC = b"s" * 32


@pytest.fixture(scope="module")
def secret():
    return SecretContext.generate(PRESET)


KEYHOLDER_NAME = PartyName(KEYHOLDER, "keyholder")


@pytest.fixture(scope="module")
def enrolment():
    return create_federation([f"site-{i}" for i in range(4)])


def serve(secret, enrolment, federation=None):
    store = KeyHolderStore()
    service = KeyHolderService(secret, federation or enrolment.federation, store, min_clients=2)
    server, port = start_server(service.register, "127.0.0.1", 0,
                                tls=enrolment.party(KEYHOLDER, "keyholder").tls(enrolment.ca))
    return server, f"127.0.0.1:{port}", store


@pytest.fixture
def keyholder_service(secret, enrolment):
    server, address, store = serve(secret, enrolment)
    yield address, store
    server.stop(0)


@pytest.fixture
def keyholder(keyholder_service, enrolment):
    address, store = keyholder_service
    client = KeyHolderClient(address, enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca), server=KEYHOLDER_NAME)
    identities = [p.identity for p in enrolment.parties if p.name.role == SITE]
    yield client, identities, store
    client.close()


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


def test_decrypts_each_round_only_once(keyholder, secret):
    client, identities, store = keyholder
    receipts, chunks = receipts_for(identities[:2]), aggregate_of(secret, np.ones(LENGTH))
    client.decrypt("round-1", LENGTH, SPEC, receipts, chunks)
    with pytest.raises(DuplicateSubmission, match="already decrypted"):
        client.decrypt("round-1", LENGTH, SPEC, receipts, chunks)
    assert [entry[2] for entry in store.audit_log()] == ["decrypted", "refused"]


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


# -- who may ask: the aggregator's certificate, nobody else ------------------------------------


def test_a_site_with_a_valid_certificate_cannot_decrypt_and_the_audit_log_names_it(keyholder_service, enrolment, secret):
    address, store = keyholder_service
    site = enrolment.party(SITE, "site-0")
    sites = [p.identity for p in enrolment.parties if p.name.role == SITE]
    intruder = KeyHolderClient(address, site.tls(enrolment.ca), server=KEYHOLDER_NAME)
    assert intruder.public_context().fingerprint == secret.fingerprint  # public: any enrolled party may fetch it
    with pytest.raises(PermissionDenied, match="only the aggregator aggregator may"):
        intruder.decrypt("round-1", LENGTH, SPEC, receipts_for(sites[:3]), aggregate_of(secret, np.ones(LENGTH)))
    (_, round_id, decision, detail, caller), = store.audit_log()
    assert decision == "refused" and round_id is None and "site site-0" in caller and "PermissionDenied" in detail


def assert_handshake_refused(address, tls=None, server=None):
    """One call without waiting for readiness: a refused handshake is UNAVAILABLE at once."""
    stub = keyholder_pb2_grpc.KeyHolderStub(channel(address, tls, server=server, insecure=tls is None))
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetPublicContext(keyholder_pb2.PublicContextRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_caller_never_reaches_the_keyholder(keyholder_service):
    address, store = keyholder_service
    assert_handshake_refused(address)
    assert store.audit_log() == []


def test_a_certificate_from_another_ca_is_refused_even_with_the_aggregators_name(keyholder_service, enrolment):
    address, store = keyholder_service
    foreign_ca = ephemeral_credentials(PartyName(AGGREGATOR, "aggregator"))[0]
    impostor = dataclasses.replace(foreign_ca, ca=enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca).ca)
    assert_handshake_refused(address, impostor, KEYHOLDER_NAME)


def test_the_aggregator_must_be_the_one_the_federation_names(secret, enrolment):
    """A second certificate with the aggregator role but another id, issued by the same CA."""
    server, address, store = serve(secret, enrolment)
    try:
        rogue = issue_credentials(enrolment.ca, enrolment.ca_key, PartyName(AGGREGATOR, "rogue-aggregator"))
        sites = [p.identity for p in enrolment.parties if p.name.role == SITE]
        with pytest.raises(PermissionDenied):
            KeyHolderClient(address, rogue, server=KEYHOLDER_NAME).decrypt(
                "round-1", LENGTH, SPEC, receipts_for(sites[:2]), aggregate_of(secret, np.ones(LENGTH)))
    finally:
        server.stop(0)


def test_a_revoked_aggregator_certificate_is_refused(secret, enrolment):
    aggregator = enrolment.party(AGGREGATOR, "aggregator")
    federation = dataclasses.replace(enrolment.federation,
                                     revoked_certificates=frozenset({aggregator.certificate.serial_number}))
    server, address, store = serve(secret, enrolment, federation)
    try:
        sites = [p.identity for p in enrolment.parties if p.name.role == SITE]
        with pytest.raises(PermissionDenied, match="revoked"):
            KeyHolderClient(address, aggregator.tls(enrolment.ca), server=KEYHOLDER_NAME).decrypt(
                "round-1", LENGTH, SPEC, receipts_for(sites[:2]), aggregate_of(secret, np.ones(LENGTH)))
    finally:
        server.stop(0)


def test_the_aggregator_refuses_a_keyholder_posing_with_another_partys_certificate(secret, enrolment):
    """The server side of the check: the channel wants the key-holder's name in the certificate."""
    store = KeyHolderStore()
    service = KeyHolderService(secret, enrolment.federation, store, min_clients=2)
    server, port = start_server(service.register, "127.0.0.1", 0, tls=enrolment.party(SITE, "site-1").tls(enrolment.ca))
    try:
        assert_handshake_refused(f"127.0.0.1:{port}", enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca),
                                 KEYHOLDER_NAME)
    finally:
        server.stop(0)
