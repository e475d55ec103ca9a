"""The key-holder service: who may ask it what, over real gRPC with mutual TLS on localhost, and
that it is only a transport over the release core (epochs signed with the enrolled identity,
rounds registered for the aggregator, releases audited with the caller)."""

import dataclasses

import grpc
import numpy as np
import pytest

from securefl.enrolment import create_federation, ephemeral_credentials, issue_credentials
from securefl.errors import DuplicateSubmission, InvalidInput, PermissionDenied, PolicyViolation
from securefl.he.audit import AuditFile
from securefl.he.epochs import EpochSettings, EpochVerifier, protect_update
from securefl.he.keystore import KeyStore
from securefl.he.release import KeyHolderCore
from securefl.identity import sign_receipt
from securefl.pki import AGGREGATOR, KEYHOLDER, OPERATOR, SITE, PartyName
from securefl.rounds.chunks import ChunkDigest
from securefl.services.keyholder import KeyHolderService
from securefl.services.keyholder_client import KeyHolderClient
from securefl.services.rpc import channel, start_server
from securefl.v1 import common_pb2, keyholder_pb2, keyholder_pb2_grpc

KEYHOLDER_NAME = PartyName(KEYHOLDER, "keyholder")
SPEC = b"s" * 32
LENGTH = 101


@pytest.fixture(scope="module")
def enrolment():
    return create_federation([f"site-{i}" for i in range(4)])


@pytest.fixture
def served(enrolment, tmp_path):
    """A key-holder service on the enrolled key-holder's certificate; yields (address, audit)."""
    server, address, audit, keystore = serve(enrolment, tmp_path)
    yield address, audit
    server.stop(0)
    keystore.close()


def serve(enrolment, tmp_path, federation=None, certificate_of=(KEYHOLDER, "keyholder")):
    federation = federation or enrolment.federation
    settings = EpochSettings.for_federation(federation, "bfv")
    keystore = KeyStore.create(tmp_path / "keyholder.keystore", "test passphrase",
                               enrolment.party(KEYHOLDER, "keyholder").identity, settings)
    audit = AuditFile(tmp_path / "audit.jsonl")
    service = KeyHolderService(KeyHolderCore(keystore, federation.roster, 2, audit), federation, audit)
    server, port = start_server(service.register, "127.0.0.1", 0, tls=enrolment.party(*certificate_of).tls(enrolment.ca))
    return server, f"127.0.0.1:{port}", audit, keystore


def client_as(enrolment, address, role, party_id, tls=None) -> KeyHolderClient:
    return KeyHolderClient(address, tls or enrolment.party(role, party_id).tls(enrolment.ca), server=KEYHOLDER_NAME)


def sites(enrolment):
    return [p.identity for p in enrolment.parties if p.name.role == SITE]


def honest_round(enrolment, aggregator: KeyHolderClient, round_id: str, clients: int = 2):
    """What the aggregator holds at the close of an honest round: receipts and the sum."""
    epoch = EpochVerifier(enrolment.federation.keyholder.public_key).verify(aggregator.public_epoch_for_round(round_id))
    receipts, sums = [], None
    for identity in sites(enrolment)[:clients]:
        update = protect_update(epoch, round_id, identity.client_id, np.full(LENGTH - 1, 0.5), 1.0)
        receipt = common_pb2.Receipt(round_id=round_id, client_id=identity.client_id, scheme="bfv", spec_hash=SPEC,
                                     vector_length=LENGTH, digest=ChunkDigest.of(update.chunks),
                                     key_epoch=update.key_epoch, sealed_seed=update.sealed_seed)
        sign_receipt(identity, receipt)
        receipts.append(receipt)
        parsed = [epoch.codec.parse_chunk(epoch.context, c) for c in update.chunks]
        if sums is None:
            sums = parsed
        else:
            for total, chunk in zip(sums, parsed):
                total.add_(chunk)
    return receipts, [total.serialize() for total in sums]


def test_the_aggregator_registers_rounds_and_gets_the_honest_sum_released(enrolment, served):
    address, audit = served
    aggregator = client_as(enrolment, address, AGGREGATOR, "aggregator")
    receipts, aggregate = honest_round(enrolment, aggregator, "round-1")
    total = aggregator.release("round-1", LENGTH, SPEC, receipts, aggregate)
    np.testing.assert_allclose(total, np.append(np.full(LENGTH - 1, 1.0), 2.0), atol=1e-3)
    entry = audit.entries()[0]
    assert entry["decision"] == "released" and entry["round"] == "round-1"
    assert "aggregator aggregator" in entry["requester"] and "site-0#" in entry["detail"]
    # An aggregator that crashed before storing the result asks again: the same answer, nothing new.
    np.testing.assert_array_equal(aggregator.release("round-1", LENGTH, SPEC, receipts, aggregate), total)
    with pytest.raises(DuplicateSubmission, match="already decrypted from another"):
        aggregator.release("round-1", LENGTH, SPEC, receipts[1:] + receipts[:1], aggregate)


def test_epochs_are_signed_with_the_identity_federation_json_pins(enrolment, served):
    address, _ = served
    for role, party in ((SITE, "site-0"), (OPERATOR, "operator"), (AGGREGATOR, "aggregator")):
        epoch = client_as(enrolment, address, role, party).current_epoch()
        verified = EpochVerifier(enrolment.federation.keyholder.public_key).verify(epoch)
        assert verified.codec.scheme == "bfv" and not verified.context.is_private()


def test_a_refused_request_is_audited_and_does_not_use_up_the_round(enrolment, served):
    address, audit = served
    aggregator = client_as(enrolment, address, AGGREGATOR, "aggregator")
    receipts, aggregate = honest_round(enrolment, aggregator, "round-1")
    with pytest.raises(PolicyViolation, match="between 2"):
        aggregator.release("round-1", LENGTH, SPEC, receipts[:1], aggregate)
    with pytest.raises(InvalidInput, match="more than the 1 ciphertexts"):
        aggregator.release("round-1", LENGTH, SPEC, receipts, aggregate * 2)
    aggregator.release("round-1", LENGTH, SPEC, receipts, aggregate)
    assert [e["decision"] for e in audit.entries()] == ["refused", "refused", "released"]


def test_a_stream_that_skips_a_chunk_is_refused_before_decryption(enrolment, served):
    address, audit = served
    aggregator = client_as(enrolment, address, AGGREGATOR, "aggregator")
    receipts, aggregate = honest_round(enrolment, aggregator, "round-1")
    stub = keyholder_pb2_grpc.KeyHolderStub(channel(address, enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca),
                                                    server=KEYHOLDER_NAME))
    header = keyholder_pb2.DecryptHeader(round_id="round-1", vector_length=LENGTH, spec_hash=SPEC, chunk_count=1,
                                         receipts=receipts)
    messages = [keyholder_pb2.DecryptMessage(header=header),
                keyholder_pb2.DecryptMessage(chunk=common_pb2.Chunk(index=1, data=aggregate[0]))]
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Decrypt(iter(messages), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected ciphertext chunk 0" in refused.value.details()
    assert audit.entries()[-1]["decision"] == "refused"
    aggregator.release("round-1", LENGTH, SPEC, receipts, aggregate)  # not used up


# -- who may ask: the aggregator's certificate, nobody else ------------------------------------


@pytest.mark.parametrize("call", ["register", "decrypt"])
def test_a_site_with_a_valid_certificate_cannot_register_or_decrypt(enrolment, served, call):
    address, audit = served
    intruder = client_as(enrolment, address, SITE, "site-0")
    with pytest.raises(PermissionDenied, match="only the aggregator aggregator may"):
        if call == "register":
            intruder.public_epoch_for_round("round-1")
        else:
            intruder.release("round-1", LENGTH, SPEC, [], [b"x"])
    if call == "decrypt":  # the refused decryption is audited with who asked
        (entry,) = audit.entries()
        assert entry["decision"] == "refused" and entry["round"] is None and "site site-0" in entry["requester"]


def assert_handshake_refused(address, tls=None, server=None):
    """One call without waiting for readiness: a refused handshake is UNAVAILABLE at once."""
    stub = keyholder_pb2_grpc.KeyHolderStub(channel(address, tls, server=server, insecure=tls is None))
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetEpoch(keyholder_pb2.EpochRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_caller_never_reaches_the_keyholder(served):
    address, audit = served
    assert_handshake_refused(address)
    assert audit.entries() == []


def test_a_certificate_from_another_ca_is_refused_even_with_the_aggregators_name(served, enrolment):
    address, _ = served
    foreign_ca = ephemeral_credentials(PartyName(AGGREGATOR, "aggregator"))[0]
    impostor = dataclasses.replace(foreign_ca, ca=enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca).ca)
    assert_handshake_refused(address, impostor, KEYHOLDER_NAME)


def test_the_aggregator_must_be_the_one_the_federation_names(served, enrolment):
    """A second certificate with the aggregator role but another id, issued by the same CA."""
    address, _ = served
    rogue = issue_credentials(enrolment.ca, enrolment.ca_key, PartyName(AGGREGATOR, "rogue-aggregator"))
    with pytest.raises(PermissionDenied):
        client_as(enrolment, address, AGGREGATOR, "rogue-aggregator", tls=rogue).public_epoch_for_round("round-1")


def test_a_revoked_aggregator_certificate_is_refused(enrolment, tmp_path):
    aggregator = enrolment.party(AGGREGATOR, "aggregator")
    federation = dataclasses.replace(enrolment.federation,
                                     revoked_certificates=frozenset({aggregator.certificate.serial_number}))
    server, address, _, keystore = serve(enrolment, tmp_path, federation)
    try:
        with pytest.raises(PermissionDenied, match="revoked"):
            client_as(enrolment, address, AGGREGATOR, "aggregator").public_epoch_for_round("round-1")
    finally:
        server.stop(0)
        keystore.close()


def test_the_aggregator_refuses_a_keyholder_posing_with_another_partys_certificate(enrolment, tmp_path):
    """The server side of the check: the channel wants the key-holder's name in the certificate."""
    server, address, _, keystore = serve(enrolment, tmp_path, certificate_of=(SITE, "site-1"))
    try:
        assert_handshake_refused(address, enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca), KEYHOLDER_NAME)
    finally:
        server.stop(0)
        keystore.close()
