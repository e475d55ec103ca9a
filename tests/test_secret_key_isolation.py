"""The aggregator process never holds an HE secret key (bfv or ckks).

The test reads the key-holder's keystore with its passphrase, so it knows the secret key's
coefficients. After a real round, it searches the memory of both service processes for
them: they must be found in the key-holder (the search works) and not in the aggregator."""

from __future__ import annotations

import json
import re
from base64 import b64decode
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts

from securefl.client import connect
from securefl.federation import Federation
from securefl.identity import Identity
from securefl.keyfiles import PassphraseBox
from securefl.simulation import ServiceProcess
from securefl.tls import TlsConfig
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, run_round, tls_args

pytestmark = pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc/<pid>/mem")

KEYSTORE_PASSPHRASE = "test keystore passphrase"


def secret_keys_in(keystore: Path) -> list[ts.Context]:
    """The HE secret contexts in a keystore file, read with its passphrase (the test is the
    key-holder's operator here; the running key-holder holds the file's lock, not its bytes)."""
    blob = keystore.read_bytes()
    header = blob[:blob.index(b"\n") + 1]
    state = json.loads(PassphraseBox.open(KEYSTORE_PASSPHRASE, header, blob)[1])
    return [ts.context_from(b64decode(epoch["secret"])) for epoch in state["epochs"]]


def secret_key_pattern(context: ts.Context, start: int = 1000, words: int = 8) -> bytes:
    """Eight consecutive 64-bit coefficients of the secret key, as they lie in memory."""
    key = context.secret_key().data.data()
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


@pytest.mark.parametrize("scheme", ["bfv", "ckks"])
def test_aggregator_process_never_holds_the_secret_key(tmp_path, rng, scheme):
    enrolment = enrol_with_cli(tmp_path / "enrolment", "site-0", "site-1")
    federation = Federation.load(enrolment / "federation.json")
    env = {**PASSPHRASE_ENV, "SECUREFL_KEY_PASSPHRASE": KEYSTORE_PASSPHRASE}
    federation_args = ["--federation", str(enrolment / "federation.json")]
    keyholder = ServiceProcess("keyholder", [
        "keyholder", "serve", "--port", "0", *federation_args, *tls_args(enrolment, "keyholder"), "--scheme", scheme,
        "--identity", str(enrolment / "keyholder.identity.json"), "--keystore", str(tmp_path / "keyholder.keystore"),
        "--audit-log", str(tmp_path / "audit.jsonl"),
    ], tmp_path, env)
    aggregator = ServiceProcess("aggregator", [
        "aggregator", "serve", "--port", "0", *federation_args, *tls_args(enrolment, "aggregator"), "--scheme", scheme,
        "--identity", str(enrolment / "aggregator.identity.json"), "--db", str(tmp_path / "agg.db"),
    ], tmp_path, env)

    def tls(party: str) -> TlsConfig:
        return TlsConfig.from_files(enrolment / f"{party}.tls.crt", enrolment / f"{party}.tls.key", enrolment / "ca.crt",
                                    passphrase="test passphrase")

    try:
        aggregator.args += ["--keyholder", f"127.0.0.1:{keyholder.start()}"]
        aggregator.start()
        identities = [Identity.load(enrolment / f"site-{i}.identity.json", "test passphrase") for i in range(2)]
        clients = [connect(f"127.0.0.1:{aggregator.port}", identity=i, federation=federation, tls=tls(i.client_id))
                   for i in identities]
        run_round(clients, [rng.normal(size=5000), rng.normal(size=5000)], [100.0, 300.0])

        (secret,) = secret_keys_in(tmp_path / "keyholder.keystore")
        pattern = secret_key_pattern(secret)
        assert process_memory_contains(keyholder.pid, pattern), "the search must find the key where it is"
        assert not process_memory_contains(aggregator.pid, pattern)
    finally:
        aggregator.stop()
        keyholder.stop()
