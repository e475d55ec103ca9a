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
from securefl.he.keys import SecretContext, load_public_context
from securefl.he.presets import get_preset
from securefl.identity import Identity, Roster
from securefl.simulation import ServiceProcess
from securefl.services.keyholder_client import KeyHolderClient
from tests.conftest import run_round

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


def test_aggregator_process_never_holds_the_secret_key(tmp_path, monkeypatch, rng):
    secret = SecretContext.generate(get_preset("add-only-4096"))
    secret.save(tmp_path / "keys.bin", "test passphrase")
    monkeypatch.setenv("SECUREFL_KEY_PASSPHRASE", "test passphrase")
    identities = [Identity.generate(f"site-{i}") for i in range(2)]
    Roster.of(identities).save(tmp_path / "roster.json")
    keyholder = ServiceProcess("keyholder", [
        "keyholder", "serve", "--port", "0", "--roster", str(tmp_path / "roster.json"), "--min-clients", "2",
        "--key-file", str(tmp_path / "keys.bin"), "--db", str(tmp_path / "kh.db"),
    ], tmp_path)
    aggregator = ServiceProcess("aggregator", [
        "aggregator", "serve", "--port", "0", "--roster", str(tmp_path / "roster.json"), "--db", str(tmp_path / "agg.db"),
    ], tmp_path)
    try:
        aggregator.args += ["--keyholder", f"127.0.0.1:{keyholder.start()}"]
        aggregator.start()
        relayed = KeyHolderClient(f"127.0.0.1:{keyholder.port}").public_context()
        assert relayed.fingerprint == secret.fingerprint  # the key file's key is the one in use
        assert not load_public_context(relayed.context).is_private()
        clients = [connect(f"127.0.0.1:{aggregator.port}", identity=i, keyholder_fingerprint=secret.fingerprint)
                   for i in identities]
        run_round(clients, [rng.normal(size=5000), rng.normal(size=5000)], [1.0, 1.0])

        pattern = secret_key_pattern(secret)
        assert process_memory_contains(keyholder.pid, pattern), "the search must find the key where it is"
        assert not process_memory_contains(aggregator.pid, pattern)
    finally:
        aggregator.stop()
        keyholder.stop()
