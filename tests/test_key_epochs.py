"""Key epochs: sealed seeds, signed public epochs that clients verify against the pinned key,
and the keystore (rotation, grace, retirement, the per-key round record, the lock, at rest)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from securefl.errors import DuplicateSubmission, InvalidInput, PolicyViolation, VerificationFailed
from securefl.he.epochs import EpochSettings, EpochVerifier, sign_epoch
from securefl.he.keystore import KeyStore, RotationPolicy
from securefl.he.masks import SEALED_SEED_BYTES, open_seed, seal_seed, x25519_public_bytes
from securefl.keyfiles import PassphraseBox, write_private
from securefl.v1 import common_pb2

SETTINGS = EpochSettings("bfv", "bfv-8192", max_clients=4, value_bound=4.0, max_weight=10.0)
PASSPHRASE = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    with KeyStore.create(tmp_path / "ks.bin", PASSPHRASE, SETTINGS, RotationPolicy(rotate_every=2)) as keystore:
        yield keystore


# -- sealed seeds ---------------------------------------------------------------------------------

def test_a_sealed_seed_opens_only_for_its_round_client_and_epoch():
    key = X25519PrivateKey.generate()
    seed = os.urandom(32)
    sealed = seal_seed(seed, x25519_public_bytes(key), "r1", "site-0", 3)
    assert len(sealed) == SEALED_SEED_BYTES and seed not in sealed
    assert open_seed(sealed, key, "r1", "site-0", 3) == seed
    for args in (("r2", "site-0", 3), ("r1", "site-1", 3), ("r1", "site-0", 4)):
        with pytest.raises(VerificationFailed):
            open_seed(sealed, key, *args)
    with pytest.raises(VerificationFailed):
        open_seed(sealed, X25519PrivateKey.generate(), "r1", "site-0", 3)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    for bad in (bytes(tampered), sealed[:-1], bytes(32) + sealed[32:]):  # bit flip, truncation, low-order point
        with pytest.raises(VerificationFailed):
            open_seed(bad, key, "r1", "site-0", 3)


def test_two_seals_of_one_seed_differ():
    public = x25519_public_bytes(X25519PrivateKey.generate())
    assert seal_seed(bytes(32), public, "r", "c", 1) != seal_seed(bytes(32), public, "r", "c", 1)


# -- signed public epochs -------------------------------------------------------------------------

def test_clients_verify_an_epoch_against_the_pinned_key(store):
    verified = EpochVerifier(store.signing_public_key).verify(store.epoch_for_round("r1"))
    assert verified.number == 1 and verified.codec.scheme == "bfv"
    assert not verified.context.is_private()


@pytest.mark.parametrize("field, value", [
    ("epoch", 7), ("scheme", "ckks"), ("preset", "add-only-8192"), ("sealing_public_key", bytes(32)),
    ("max_clients", 5), ("precision_bits", 9), ("value_bound", 40.0), ("max_weight", 1e6),
])
def test_an_epoch_altered_in_transit_is_refused(store, field, value):
    epoch = common_pb2.PublicEpoch()
    epoch.CopyFrom(store.epoch_for_round("r1"))
    setattr(epoch, field, value)
    with pytest.raises(VerificationFailed, match="pinned"):
        EpochVerifier(store.signing_public_key).verify(epoch)


def test_an_epoch_with_another_context_or_signer_is_refused(store, tmp_path):
    epoch = common_pb2.PublicEpoch()
    epoch.CopyFrom(store.epoch_for_round("r1"))
    with KeyStore.create(tmp_path / "other.bin", PASSPHRASE, SETTINGS) as other:
        epoch.context = other.current.public.context
    with pytest.raises(VerificationFailed):
        EpochVerifier(store.signing_public_key).verify(epoch)
    sign_epoch(Ed25519PrivateKey.generate(), epoch)  # the aggregator signing its own key
    with pytest.raises(VerificationFailed):
        EpochVerifier(store.signing_public_key).verify(epoch)


def test_clients_follow_rotations_without_repinning_and_never_go_back(store):
    verifier = EpochVerifier(store.signing_public_key)
    first = store.epoch_for_round("r1")
    store.epoch_for_round("r2")
    third = store.epoch_for_round("r3")  # rotate_every = 2: a new epoch
    assert verifier.verify(first).number == 1
    assert verifier.verify(third).number == 2
    with pytest.raises(VerificationFailed, match="older"):
        verifier.verify(first)  # an aggregator replaying a retired epoch


def test_two_different_epochs_under_one_number_are_refused(store):
    verifier = EpochVerifier(store.signing_public_key)
    verifier.verify(store.epoch_for_round("r1"))
    signing_key = Ed25519PrivateKey.from_private_bytes(_signing_key_bytes(store))
    forged = common_pb2.PublicEpoch()
    forged.CopyFrom(store.current.public)
    forged.sealing_public_key = x25519_public_bytes(X25519PrivateKey.generate())
    sign_epoch(signing_key, forged)
    with pytest.raises(VerificationFailed, match="two different"):
        verifier.verify(forged)


def _signing_key_bytes(store: KeyStore) -> bytes:
    """Test-only peek at the signing key, to model a key-holder that equivocates."""
    return store._signing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())


# -- keystore: rotation, grace, retirement --------------------------------------------------------

def test_each_epoch_serves_at_most_rotate_every_rounds(store):
    numbers = [store.epoch_for_round(f"r{i}").epoch for i in range(5)]
    assert numbers == [1, 1, 2, 2, 3]
    assert store.epoch_for_round("r0").epoch == 1  # registration is idempotent


def test_a_replaced_epoch_finishes_its_rounds_within_the_grace_period(tmp_path):
    clock = Clock()
    with KeyStore.create(tmp_path / "ks.bin", PASSPHRASE, SETTINGS, RotationPolicy(1, grace_seconds=60), clock) as store:
        store.epoch_for_round("r1")
        store.epoch_for_round("r2")  # epoch 2; epoch 1 still serves r1
        assert store.epoch_numbers() == [1, 2]
        epoch = store.epoch_of_round("r1")
        store.mark_decrypted(epoch, "r1")
        assert store.epoch_numbers() == [2]  # no open round left: its keys are gone
        store.epoch_for_round("r3")  # epoch 3; epoch 2 still serves r2...
        clock.now += 61  # ...until the grace period ends
        assert store.epoch_numbers() == [3]
        with pytest.raises(PolicyViolation, match="not registered"):
            store.epoch_of_round("r2")


def test_retiring_an_epoch_deletes_its_keys_and_starts_a_new_one(store):
    store.epoch_for_round("r1")
    epoch = store.epoch_of_round("r1")
    store.retire(epoch)
    assert store.epoch_numbers() == [2] and store.current.number == 2
    with pytest.raises(PolicyViolation):
        store.epoch_of_round("r1")
    assert store.epoch_for_round("r1").epoch == 2  # the round may be re-run under the new key


def test_a_round_is_decrypted_once_even_across_epochs_and_restarts(tmp_path):
    path = tmp_path / "ks.bin"
    with KeyStore.create(path, PASSPHRASE, SETTINGS, RotationPolicy(rotate_every=1)) as store:
        store.epoch_for_round("r1")
        store.mark_decrypted(store.epoch_of_round("r1"), "r1")
        store.epoch_for_round("r2")  # epoch 1 is deleted; r1 stays spent
        assert 1 not in store.epoch_numbers()
    with KeyStore.open(path, PASSPHRASE, SETTINGS, RotationPolicy(rotate_every=1)) as store:
        for call in (lambda: store.epoch_for_round("r1"), lambda: store.epoch_of_round("r1")):
            with pytest.raises(DuplicateSubmission):
                call()
        assert store.epoch_of_round("r2").number == 2  # still open after the restart


def test_new_settings_start_a_new_epoch_on_open(tmp_path):
    path = tmp_path / "ks.bin"
    KeyStore.create(path, PASSPHRASE, SETTINGS).close()
    grown = EpochSettings("bfv", "bfv-8192", max_clients=6, value_bound=4.0, max_weight=10.0)
    with KeyStore.open(path, PASSPHRASE, grown) as store:
        assert store.current.number == 2 and store.current.public.max_clients == 6


# -- keystore: at rest, lock ----------------------------------------------------------------------

def test_keystore_is_encrypted_0600_and_needs_the_passphrase(tmp_path, store):
    blob = store.path.read_bytes()
    assert store.path.stat().st_mode & 0o777 == 0o600
    private = store.current.sealing_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                      serialization.NoEncryption())
    for secret in (store.current.secret_bytes[-4096:-2048], private, _signing_key_bytes(store)):
        assert secret not in blob
    store.close()
    with pytest.raises(VerificationFailed):
        KeyStore.open(store.path, "wrong", SETTINGS)


def test_secret_files_are_0600_from_creation_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_private(tmp_path / "secret", b"s")
    finally:
        os.umask(old)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_a_tampered_header_does_not_open():
    box = PassphraseBox(PASSPHRASE)
    blob = box.seal(b"HDR1\n", b"payload")
    with pytest.raises(VerificationFailed):
        PassphraseBox.open(PASSPHRASE, b"HDR2\n", b"HDR2\n" + blob[5:])
    assert PassphraseBox.open(PASSPHRASE, b"HDR1\n", blob)[1] == b"payload"


def test_keystore_secrets_cannot_be_pickled(store):
    for secret in (store, store.current):
        with pytest.raises(TypeError):
            pickle.dumps(secret)
    assert "secret" not in repr(store.current)


def test_a_second_keyholder_process_cannot_use_the_same_key_file(tmp_path):
    """Today a second key-holder with the same key file and another database could decrypt a
    round again. The round record now lives in the key file, and the file is locked."""
    path = tmp_path / "ks.bin"
    second = textwrap.dedent(f"""
        import sys
        from securefl.errors import DuplicateSubmission, InvalidInput
        from securefl.he.epochs import EpochSettings
        from securefl.he.keystore import KeyStore
        settings = EpochSettings("bfv", "bfv-8192", 4, 4.0, 10.0)
        try:
            store = KeyStore.open({str(path)!r}, {PASSPHRASE!r}, settings)
        except InvalidInput as exc:
            print("locked" if "in use" in str(exc) else exc); sys.exit(0)
        try:
            store.epoch_of_round("r1")
        except DuplicateSubmission:
            print("already decrypted"); sys.exit(0)
        print("would decrypt again")
    """)

    def run_second() -> str:
        return subprocess.run([sys.executable, "-c", second], capture_output=True, text=True, check=True,
                              cwd=os.getcwd()).stdout.strip()

    store = KeyStore.create(path, PASSPHRASE, SETTINGS)
    store.epoch_for_round("r1")
    store.mark_decrypted(store.epoch_of_round("r1"), "r1")
    assert run_second() == "locked"
    store.close()
    assert run_second() == "already decrypted"


def test_create_refuses_an_existing_file(store):
    store.close()
    with pytest.raises(InvalidInput, match="exists"):
        KeyStore.create(store.path, PASSPHRASE, SETTINGS)


def test_ckks_epochs_carry_their_own_parameters(tmp_path):
    settings = EpochSettings("ckks", "add-only-8192", max_clients=4, value_bound=1.0, max_weight=10.0)
    with KeyStore.create(tmp_path / "ks.bin", PASSPHRASE, settings) as store:
        verified = EpochVerifier(store.signing_public_key).verify(store.epoch_for_round("r1"))
        assert verified.codec.scheme == "ckks" and verified.codec.mask_bound > 2 * 4 * 10.0
        assert np.isclose(verified.codec.mask_bound, 2.0**26 / 4 - 10.0)
    with pytest.raises(InvalidInput, match="bfv-8192 is a bfv preset"):
        EpochSettings("ckks", "bfv-8192", 4, 1.0, 1.0).codec()
    with pytest.raises(InvalidInput, match="CKKS masks need"):
        EpochSettings("ckks", "add-only-8192", 1000, 1.0, 1000.0).codec()
