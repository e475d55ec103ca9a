"""The `securefl` command, run as a user would."""

import os

from rich.console import Console

from securefl.demo import run_demo
from securefl.federation import Federation
from securefl.identity import Identity
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, securefl_cli as securefl


def test_demo_secure_accuracy_is_within_half_a_point_of_plaintext_fedavg():
    secure, plain = run_demo(scheme="ckks", n_clients=5, rounds=10, seed=0, console=Console(quiet=True))
    assert len(secure.accuracy) == len(plain.accuracy) == 10
    assert secure.accuracy[-1] > 0.9
    assert abs(secure.accuracy[-1] - plain.accuracy[-1]) <= 0.005
    assert min(secure.bytes_per_client) > max(plain.bytes_per_client)


def test_demo_command_prints_the_comparison_tables():
    result = securefl("demo", "--clients", "3", "--rounds", "2")
    assert result.returncode == 0, result.stderr
    for text in ("Test accuracy of the global model", "plaintext FedAvg", "bytes sent per client", "final accuracy"):
        assert text in result.stdout


def test_enrol_writes_a_ca_every_partys_files_and_the_federation_file(tmp_path):
    enrol_with_cli(tmp_path, "hospital-a", "hospital-b")
    federation = Federation.load(tmp_path / "federation.json")
    assert set(federation.roster.ids()) == {"hospital-a", "hospital-b"}
    assert federation.aggregator.party_id == "aggregator" and federation.keyholder.party_id == "keyholder"
    assert set(federation.operators) == {"operator"} and b"BEGIN CERTIFICATE" in federation.ca_certificate
    for party in ("hospital-a", "hospital-b", "aggregator", "keyholder", "operator"):
        for suffix in ("identity.json", "tls.key", "tls.crt"):
            assert (tmp_path / f"{party}.{suffix}").exists()
        assert (tmp_path / f"{party}.tls.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    assert federation.aggregator.matches(Identity.load(tmp_path / "aggregator.identity.json", "test passphrase"))


def test_enrol_refuses_a_malformed_site_id(tmp_path):
    result = securefl("enrol", "../escape", "--out", str(tmp_path))
    assert result.returncode == 2 and "site id" in result.stderr


def test_enrol_without_a_passphrase_refuses_instead_of_writing_clear_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECUREFL_IDENTITY_PASSPHRASE"}
    result = securefl("enrol", "hospital-a", "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 2 and "SECUREFL_IDENTITY_PASSPHRASE" in result.stderr
    assert not (tmp_path / "out" / "hospital-a.identity.json").exists()


def test_keyholder_refuses_a_key_file_without_passphrase(tmp_path):
    enrol_with_cli(tmp_path, "hospital-a")
    env = {k: v for k, v in PASSPHRASE_ENV.items() if k != "SECUREFL_KEY_PASSPHRASE"}
    result = securefl("keyholder", "serve", "--federation", str(tmp_path / "federation.json"), "--key-file",
                      str(tmp_path / "keys.bin"), "--port", "0", "--insecure", env=env)
    assert result.returncode == 2 and "SECUREFL_KEY_PASSPHRASE" in result.stderr


def test_aggregator_refuses_ckks_without_a_keyholder(tmp_path):
    enrol_with_cli(tmp_path, "hospital-a")
    result = securefl("aggregator", "serve", "--federation", str(tmp_path / "federation.json"), "--identity",
                      str(tmp_path / "aggregator.identity.json"), "--port", "0", "--db", str(tmp_path / "a.db"),
                      "--insecure")
    assert result.returncode == 2 and "key-holder" in result.stderr


def test_services_refuse_to_start_without_tls_unless_insecure_is_explicit(tmp_path):
    enrol_with_cli(tmp_path, "hospital-a")
    result = securefl("aggregator", "serve", "--federation", str(tmp_path / "federation.json"), "--identity",
                      str(tmp_path / "aggregator.identity.json"), "--scheme", "plain", "--port", "0")
    assert result.returncode == 2 and "--insecure" in result.stderr and "--tls-cert" in result.stderr


def test_secagg_demo_survives_hospitals_dropping_mid_round():
    secure, plain = run_demo(scheme="secagg", n_clients=5, rounds=4, seed=0, console=Console(quiet=True))
    assert len(secure.accuracy) == 4  # round 3 lost a hospital before it shared keys, yet completed
    assert abs(secure.accuracy[-1] - plain.accuracy[-1]) <= 0.015
    assert secure.bytes_per_client == plain.bytes_per_client  # masked uint32 = float32 size
