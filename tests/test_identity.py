import pytest

from securefl.errors import InvalidInput, UnknownClient, VerificationFailed
from securefl.identity import Identity, Roster, check_identifier, sign_receipt, signature_valid, verify_receipt
from securefl.v1 import common_pb2


def make_receipt(identity: Identity, **overrides) -> common_pb2.Receipt:
    fields = dict(round_id="r1", client_id=identity.client_id, scheme="ckks", spec_hash=b"s" * 32,
                  vector_length=10, digest=b"d" * 32)
    receipt = common_pb2.Receipt(**fields)
    sign_receipt(identity, receipt)
    for key, value in overrides.items():
        setattr(receipt, key, value)
    return receipt


def test_a_signature_verifies_for_its_key_and_message_only():
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    signature = alice.sign(b"message")
    assert signature_valid(alice.public_bytes, signature, b"message")
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    for key, sig, message in [(bob.public_bytes, signature, b"message"), (alice.public_bytes, signature, b"messagf"),
                              (alice.public_bytes, tampered, b"message"), (alice.public_bytes, signature[:63], b"message"),
                              (alice.public_bytes[:31], signature, b"message"), (alice.public_bytes, b"", b"message")]:
        assert not signature_valid(key, sig, message)


def test_a_signed_receipt_verifies_against_the_roster():
    alice = Identity.generate("alice")
    verify_receipt(Roster.of([alice]), make_receipt(alice))


@pytest.mark.parametrize("field, value", [
    ("round_id", "r2"), ("scheme", "plain"), ("spec_hash", b"x" * 32), ("vector_length", 11), ("digest", b"e" * 32),
    ("key_epoch", 2), ("sealed_seed", b"z" * 80),
])
def test_changing_any_signed_field_breaks_the_signature(field, value):
    alice = Identity.generate("alice")
    with pytest.raises(VerificationFailed):
        verify_receipt(Roster.of([alice]), make_receipt(alice, **{field: value}))


def test_a_receipt_signed_by_another_key_fails():
    alice, impostor = Identity.generate("alice"), Identity.generate("alice")
    with pytest.raises(VerificationFailed):
        verify_receipt(Roster.of([alice]), make_receipt(impostor))


def test_unenrolled_clients_are_refused():
    alice, mallory = Identity.generate("alice"), Identity.generate("mallory")
    with pytest.raises(UnknownClient):
        verify_receipt(Roster.of([alice]), make_receipt(mallory))


@pytest.mark.parametrize("bad", ["", "a" * 65, "../etc", "with space", "-leading"])
def test_malformed_identifiers_are_refused(bad):
    with pytest.raises(InvalidInput):
        check_identifier(bad, "client id")


def test_identity_round_trips_through_an_encrypted_0600_file(tmp_path):
    alice = Identity.generate("alice")
    alice.save(tmp_path / "alice.json", "a passphrase")
    assert (tmp_path / "alice.json").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "alice.json").read_bytes()
    loaded = Identity.load(tmp_path / "alice.json", "a passphrase")
    verify_receipt(Roster.of([alice]), make_receipt(loaded))


def test_an_identity_file_opens_only_with_its_passphrase(tmp_path):
    Identity.generate("alice").save(tmp_path / "alice.json", "a passphrase")
    with pytest.raises(VerificationFailed, match="wrong passphrase"):
        Identity.load(tmp_path / "alice.json", "another passphrase")
