"""The HE encryption pool leaks nothing of multiprocessing to its callers (issue 13, item 1).

`aggregate` of an update large enough for the worker processes runs, in a subprocess as a user
would run it, from a script without a main guard, from `python -`, from `python -c`, from a
notebook-like context (cells executed in a `__main__` without a file) and from a thread, against
a real LocalFederation; each finishes with the right average and used the workers. A worker
killed mid-encryption gives an error that says what happened and what to do, and the next call
works; where workers cannot start, encryption falls back to the calling process with a one-line
warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest

from securefl.enrolment import write_party
from securefl.errors import InvalidInput, WorkerDied
from securefl.he.codec import decrypt_chunks, parse_chunk
from securefl.he.keys import SecretContext, load_public_context
from securefl.he.pool import EncryptionPool, Encryptor
from securefl.he.presets import get_preset
from securefl.pki import SITE
from securefl.simulation import LocalFederation, SecAggSettings

VALUES = 200_000  # 13 BFV ciphertexts: above the inline limit, so the workers encrypt
PASSPHRASE = "entry point passphrase"

SITE_SCRIPT = """\
import numpy as np
import securefl
from securefl.he.pool import shared_pool

federation = securefl.Federation.load({dir!r} + "/federation.json")
client = securefl.connect({address!r}, identity=securefl.Identity.load({dir!r} + "/site-1.identity.json"),
                          federation=federation,
                          tls=securefl.TlsConfig.from_files({dir!r} + "/site-1.tls.crt", {dir!r} + "/site-1.tls.key",
                                                            federation.ca_certificate))
average = client.aggregate(np.full({values}, 0.5), weight=1.0, round_id={round_id!r})
print("average", float(average.mean()), "workers", len(shared_pool().pids()))
"""

THREAD = """\
import threading

def run():
{body}

worker = threading.Thread(target=run)
worker.start()
worker.join()
"""

NOTEBOOK = """\
import sys, types
main = types.ModuleType("__main__")  # as IPython runs cells: a __main__ without a file
sys.modules["__main__"] = main
for cell in {cells!r}:
    exec(compile(cell, "<ipython-input>", "exec"), main.__dict__)
"""


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site-1")
    with LocalFederation(2, secagg=SecAggSettings(value_bound=4.0, max_weight=4.0)) as fed:
        write_party(site_dir, fed.enrolment.party(SITE, "site-1"), PASSPHRASE)
        fed.federation.save(site_dir / "federation.json")
        yield fed, site_dir


def run_site(federation, site_dir: Path, round_id: str, how: str, tmp_path: Path) -> str:
    """site-1 aggregates in a subprocess started `how`; site-2 joins the round from this process."""
    script = SITE_SCRIPT.format(dir=str(site_dir), address=federation.aggregator_address, values=VALUES,
                                round_id=round_id)
    env = {**os.environ, "SECUREFL_IDENTITY_PASSPHRASE": PASSPHRASE}
    if how == "script without a main guard":
        (tmp_path / "site.py").write_text(script)
        command, stdin = [sys.executable, str(tmp_path / "site.py")], None
    elif how == "python -":
        command, stdin = [sys.executable, "-"], script
    elif how == "python -c":
        command, stdin = [sys.executable, "-c", script], None
    elif how == "a notebook":
        cells = [script.split("average =")[0], "average =" + script.split("average =")[1]]
        command, stdin = [sys.executable, "-c", NOTEBOOK.format(cells=cells)], None
    else:  # a thread
        command, stdin = [sys.executable, "-c", THREAD.format(body=textwrap.indent(script, "    "))], None
    other = threading.Thread(target=federation.clients[1].aggregate, args=(np.full(VALUES, 1.5),),
                             kwargs={"round_id": round_id, "timeout": 120})
    other.start()
    try:
        completed = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=180, env=env,
                                   cwd=tmp_path)
    finally:
        other.join()
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


ENTRY_POINTS = ["script without a main guard", "python -", "python -c", "a notebook", "a thread"]


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_aggregate_works_from_any_entry_point_on_the_worker_processes(federation, how, tmp_path):
    fed, site_dir = federation
    output = run_site(fed, site_dir, f"entry-{ENTRY_POINTS.index(how)}", how, tmp_path)
    average, workers = output.split()[1], output.split()[3]
    assert abs(float(average) - 1.0) < 1e-3 and int(workers) >= 1, output
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def ckks():
    secret = SecretContext.generate(get_preset("add-only-4096"))
    return secret, load_public_context(secret.public_bytes)


def test_a_worker_killed_mid_encryption_says_what_happened_and_the_next_call_works(ckks):
    secret, public = ckks
    slots = get_preset("add-only-4096").slots
    pool = EncryptionPool(workers=2)
    try:
        pool.encrypt(secret.public_bytes, np.zeros(16 * slots), slots, "ckks")  # workers up, context loaded
        outcome: dict[str, BaseException] = {}

        def encrypt_a_lot() -> None:
            try:
                pool.encrypt(secret.public_bytes, np.zeros(600 * slots), slots, "ckks")
            except BaseException as exc:
                outcome["error"] = exc

        victim = psutil.Process(pool.pids()[0])
        idle_cpu = victim.cpu_times().user
        running = threading.Thread(target=encrypt_a_lot)
        running.start()
        deadline = time.monotonic() + 60
        while victim.cpu_times().user < idle_cpu + 0.05 and time.monotonic() < deadline:  # it is encrypting now
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)  # 300 ciphertexts per worker take about a second
        running.join(timeout=120)
        error = outcome.get("error")
        assert isinstance(error, WorkerDied), error
        assert "was killed by SIGKILL while encrypting" in str(error) and "Call aggregate again" in str(error)
        assert "SECUREFL_ENCRYPTION_WORKERS=0" in str(error)

        vector = np.arange(10 * slots, dtype=np.float64) / slots
        chunks = pool.encrypt(secret.public_bytes, vector, slots, "ckks")
        parsed = [parse_chunk(public, get_preset("add-only-4096"), c, slots) for c in chunks]
        np.testing.assert_allclose(decrypt_chunks(secret.context, parsed), vector, atol=1e-4)
    finally:
        pool.shutdown()


def test_where_workers_cannot_start_encryption_falls_back_with_one_warning(ckks, monkeypatch):
    secret, public = ckks
    slots = get_preset("add-only-4096").slots
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    encryptor = Encryptor(public, secret.public_bytes, EncryptionPool(workers=2))
    vector = np.linspace(-1, 1, 12 * slots)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = encryptor.encrypt(vector, slots, "ckks")
        encryptor.encrypt(vector, slots, "ckks")
    (warning,) = caught
    assert "cannot start HE encryption worker processes" in str(warning.message)
    assert "\n" not in str(warning.message) and "encrypting in this process" in str(warning.message)
    parsed = [parse_chunk(public, get_preset("add-only-4096"), c, slots) for c in first]
    np.testing.assert_allclose(decrypt_chunks(secret.context, parsed), vector, atol=1e-4)


def test_workers_can_be_turned_off(monkeypatch):
    from securefl.he import pool

    monkeypatch.setenv("SECUREFL_ENCRYPTION_WORKERS", "0")
    monkeypatch.setattr(pool, "_shared", None)
    assert pool.shared_pool() is None
    monkeypatch.setenv("SECUREFL_ENCRYPTION_WORKERS", "many")
    with pytest.raises(InvalidInput, match="number of worker processes"):
        pool.configured_workers()
