"""The `securefl` command, run as a user would."""

import os

from rich.console import Console

from securefl.demo import run_demo
from securefl.federation import Federation
from securefl.identity import Identity
from securefl.schemes import DEFAULT_SCHEME
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, securefl_cli as securefl


def test_demo_secure_accuracy_matches_plaintext_fedavg_with_the_default_scheme():
    """bfv, the default: no test row differs from plaintext FedAvg (bench/demo_accuracy.py: 5 seeds)."""
    secure, plain = run_demo(scheme=DEFAULT_SCHEME, n_clients=5, rounds=10, seed=0, console=Console(quiet=True))
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


def serve_keyholder(directory, identity: str, env: dict[str, str]):
    enrol_with_cli(directory, "hospital-a")
    return securefl("keyholder", "serve", "--federation", str(directory / "federation.json"), "--identity",
                    str(directory / identity), "--keystore", str(directory / "keys.bin"), "--port", "0", "--insecure",
                    env=env)


def test_keyholder_refuses_a_keystore_without_passphrase(tmp_path):
    env = {k: v for k, v in PASSPHRASE_ENV.items() if k != "SECUREFL_KEY_PASSPHRASE"}
    result = serve_keyholder(tmp_path, "keyholder.identity.json", env)
    assert result.returncode == 2 and "SECUREFL_KEY_PASSPHRASE" in result.stderr
    assert not (tmp_path / "keys.bin").exists()


def test_keyholder_refuses_an_identity_federation_json_does_not_pin(tmp_path):
    result = serve_keyholder(tmp_path, "aggregator.identity.json", {**PASSPHRASE_ENV, "SECUREFL_KEY_PASSPHRASE": "k"})
    assert result.returncode == 2 and "not the key-holder key pinned" in result.stderr
    assert not (tmp_path / "keys.bin").exists()


def test_aggregator_refuses_an_he_scheme_without_a_keyholder(tmp_path):
    enrol_with_cli(tmp_path, "hospital-a")
    for scheme in ("bfv", "ckks"):
        result = securefl("aggregator", "serve", "--federation", str(tmp_path / "federation.json"), "--identity",
                          str(tmp_path / "aggregator.identity.json"), "--port", "0", "--db", str(tmp_path / "a.db"),
                          "--scheme", scheme, "--insecure")
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
