"""The aggregator process never holds the CKKS secret key.

The key-holder is started from a key file this test created, so the test knows the secret
key's coefficients. After a real round, it searches the memory of both service processes for
them: they must be found in the key-holder (the search works) and not in the aggregator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from securefl.client import connect
from securefl.federation import Federation
from securefl.he.keys import SecretContext, load_public_context
from securefl.he.presets import get_preset
from securefl.identity import Identity
from securefl.pki import KEYHOLDER
from securefl.simulation import ServiceProcess
from securefl.services.keyholder_client import KeyHolderClient
from securefl.tls import TlsConfig
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, run_round, tls_args

pytestmark = pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc/<pid>/mem")


def secret_key_pattern(secret: SecretContext, start: int = 1000, words: int = 8) -> bytes:
    """Eight consecutive 64-bit coefficients of the secret key, as they lie in memory."""
    key = secret.context.secret_key().data.data()
    return np.array([key.data(i) for i in range(start, start + words)], dtype="<u8").tobytes()


def process_memory_contains(pid: int, pattern: bytes) -> bool:
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            match = re.match(r"([0-9a-f]+)-([0-9a-f]+) (r)", line)
            if not match or "[vvar]" in line or "[vsyscall]" in line:
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            try:
                mem.seek(start)
                if pattern in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False


def test_aggregator_process_never_holds_the_secret_key(tmp_path, rng):
    enrolment = enrol_with_cli(tmp_path / "enrolment", "site-0", "site-1")
    federation = Federation.load(enrolment / "federation.json")
    secret = SecretContext.generate(get_preset("add-only-4096"))
    secret.save(tmp_path / "keys.bin", "test passphrase")
    env = {**PASSPHRASE_ENV, "SECUREFL_KEY_PASSPHRASE": "test passphrase"}
    federation_args = ["--federation", str(enrolment / "federation.json")]
    keyholder = ServiceProcess("keyholder", [
        "keyholder", "serve", "--port", "0", *federation_args, *tls_args(enrolment, "keyholder"),
        "--min-clients", "2", "--key-file", str(tmp_path / "keys.bin"), "--db", str(tmp_path / "kh.db"),
    ], tmp_path, env)
    aggregator = ServiceProcess("aggregator", [
        "aggregator", "serve", "--port", "0", *federation_args, *tls_args(enrolment, "aggregator"),
        "--identity", str(enrolment / "aggregator.identity.json"), "--db", str(tmp_path / "agg.db"),
    ], tmp_path, env)

    def tls(party: str) -> TlsConfig:
        return TlsConfig.from_files(enrolment / f"{party}.tls.crt", enrolment / f"{party}.tls.key", enrolment / "ca.crt",
                                    passphrase="test passphrase")

    try:
        aggregator.args += ["--keyholder", f"127.0.0.1:{keyholder.start()}"]
        aggregator.start()
        relayed = KeyHolderClient(f"127.0.0.1:{keyholder.port}", tls("operator"),
                                  server=federation.party(KEYHOLDER)).public_context()
        assert relayed.fingerprint == secret.fingerprint  # the key file's key is the one in use
        assert not load_public_context(relayed.context).is_private()
        identities = [Identity.load(enrolment / f"site-{i}.identity.json", "test passphrase") for i in range(2)]
        clients = [connect(f"127.0.0.1:{aggregator.port}", identity=i, federation=federation, tls=tls(i.client_id),
                           keyholder_fingerprint=secret.fingerprint) for i in identities]
        run_round(clients, [rng.normal(size=5000), rng.normal(size=5000)], [1.0, 1.0])

        pattern = secret_key_pattern(secret)
        assert process_memory_contains(keyholder.pid, pattern), "the search must find the key where it is"
        assert not process_memory_contains(aggregator.pid, pattern)
    finally:
        aggregator.stop()
        keyholder.stop()
