"""The `securefl` command, run as a user would."""

import json
import subprocess
import sys

from rich.console import Console

from securefl.demo import run_demo


def securefl(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "securefl", *args], capture_output=True, text=True, timeout=300, **kwargs)


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


def test_enrol_writes_identities_and_a_roster(tmp_path):
    result = securefl("enrol", "hospital-a", "hospital-b", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "roster.json").read_text())) == {"hospital-a", "hospital-b"}
    assert (tmp_path / "hospital-a.identity.json").exists()


def test_enrol_refuses_a_malformed_site_id(tmp_path):
    result = securefl("enrol", "../escape", "--out", str(tmp_path))
    assert result.returncode == 2 and "client id" in result.stderr


def test_keyholder_refuses_a_key_file_without_passphrase(tmp_path):
    (tmp_path / "roster.json").write_text("{}")
    env = {k: v for k, v in __import__("os").environ.items() if k != "SECUREFL_KEY_PASSPHRASE"}
    result = securefl("keyholder", "serve", "--roster", str(tmp_path / "roster.json"), "--key-file",
                      str(tmp_path / "keys.bin"), "--port", "0", env=env)
    assert result.returncode == 2 and "SECUREFL_KEY_PASSPHRASE" in result.stderr


def test_aggregator_refuses_ckks_without_a_keyholder(tmp_path):
    (tmp_path / "roster.json").write_text("{}")
    result = securefl("aggregator", "serve", "--roster", str(tmp_path / "roster.json"), "--port", "0",
                      "--db", str(tmp_path / "a.db"))
    assert result.returncode == 2 and "key-holder" in result.stderr


def test_secagg_demo_survives_hospitals_dropping_mid_round():
    secure, plain = run_demo(scheme="secagg", n_clients=5, rounds=4, seed=0, console=Console(quiet=True))
    assert len(secure.accuracy) == 4  # round 3 lost a hospital before it shared keys, yet completed
    assert abs(secure.accuracy[-1] - plain.accuracy[-1]) <= 0.015
    assert secure.bytes_per_client == plain.bytes_per_client  # masked uint32 = float32 size
