"""The key-holder decrypts large aggregates on its own worker processes (issue 11, item 5).

What crosses to a decryption worker is the secret context with the ciphertexts of one release;
the slots come back bit for bit as the key-holder's own decryption gives them. The workers are
a separate mode of the worker program: an encryption worker refuses a secret context, a
decryption worker refuses a public one and any request but a decryption. A worker that dies
mid-release costs the release nothing (the key-holder decrypts it itself), and where workers
cannot start at all the key-holder decrypts in its process after one warning."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import warnings

import numpy as np
import psutil
import pytest

from securefl.errors import InvalidInput
from securefl.he.codec import CHUNK_ENCRYPTORS, decrypt_chunks, parse_chunk
from securefl.he.frames import DECRYPT, DECRYPTED_DTYPES, FAILED, LOAD, OK, SCHEME_CODES, encode_chunks, read_frame, write_frame
from securefl.he.keys import SecretContext, fingerprint, load_public_context
from securefl.he.pool import DecryptionPool, Decryptor
from securefl.he.presets import get_preset

PRESETS = {"bfv": "bfv-8192", "ckks": "add-only-4096"}


@pytest.fixture(scope="module", params=sorted(PRESETS))
def aggregate(request):
    """A scheme's secret context and 20 ciphertexts of random slots (above the inline limit)."""
    scheme, preset = request.param, get_preset(PRESETS[request.param])
    secret = SecretContext.generate(preset)
    public = load_public_context(secret.public_bytes)
    rng = np.random.default_rng(7)
    values = (rng.integers(0, 2**39, 20 * preset.slots, dtype=np.uint64) if scheme == "bfv"
              else rng.normal(size=20 * preset.slots))
    chunks = CHUNK_ENCRYPTORS[scheme](public, values, preset.slots)
    parsed = [parse_chunk(secret.context, preset, chunk, preset.slots) for chunk in chunks]
    return scheme, secret, chunks, parsed


def test_workers_decrypt_bit_for_bit_what_the_keyholder_decrypts(aggregate):
    scheme, secret, chunks, parsed = aggregate
    pool = DecryptionPool(workers=2)
    try:
        on_workers = Decryptor(pool).decrypt(secret, scheme, chunks, parsed)
        assert len(pool.pids()) == 2
    finally:
        pool.shutdown()
    in_process = decrypt_chunks(secret.context, parsed)
    assert on_workers.dtype == in_process.dtype and np.array_equal(on_workers, in_process)


def _talk(mode: list[str], *frame: bytes) -> bytes:
    """One request to a fresh worker (`python -m securefl.he.worker [mode]`) and its reply."""
    request = io.BytesIO()
    write_frame(request, *frame)
    worker = subprocess.run([sys.executable, "-m", "securefl.he.worker", *mode], capture_output=True, timeout=60,
                            input=request.getvalue())
    reply = read_frame(io.BytesIO(worker.stdout))
    assert reply is not None, worker.stderr
    return reply


def test_a_decryption_worker_refuses_a_public_context_and_an_encryption_request(aggregate):
    scheme, secret, chunks, _ = aggregate
    code = SCHEME_CODES[scheme]
    refused = _talk(["--decrypt"], DECRYPT, code, encode_chunks([secret.public_bytes, *chunks[:2]]))
    assert refused[:1] == FAILED and b"secret key" in refused
    refused = _talk(["--decrypt"], LOAD, fingerprint(secret.public_bytes), secret.public_bytes)
    assert refused[:1] == FAILED and b"only decrypts" in refused
    answered = _talk(["--decrypt"], DECRYPT, code, encode_chunks([secret.secret_bytes(), chunks[0]]))
    assert answered[:1] == OK


def test_an_encryption_worker_refuses_a_secret_context(aggregate):
    _, secret, _, _ = aggregate
    refused = _talk([], LOAD, fingerprint(secret.public_bytes), secret.secret_bytes())
    assert refused[:1] == FAILED and b"carries a secret key" in refused


def test_a_worker_dying_mid_release_costs_the_release_nothing_and_the_next_one_uses_new_workers(aggregate, caplog):
    scheme, secret, chunks, parsed = aggregate
    expected = decrypt_chunks(secret.context, parsed)
    pool = DecryptionPool(workers=2)
    decryptor = Decryptor(pool)
    try:
        decryptor.decrypt(secret, scheme, chunks, parsed)  # both workers up and proven
        victims = [psutil.Process(pid) for pid in pool.pids()]
        for victim in victims:  # frozen: the release below blocks handing them its ciphertexts
            victim.suspend()
        outcome: dict[str, np.ndarray] = {}
        with caplog.at_level(logging.WARNING, logger="securefl.he.pool"):
            release = threading.Thread(target=lambda: outcome.update(released=decryptor.decrypt(
                secret, scheme, chunks, parsed)))
            release.start()
            release.join(timeout=1)
            assert release.is_alive()  # waiting on the frozen workers
            for victim in victims:
                victim.kill()
            release.join(timeout=60)
        released = outcome["released"]
        assert np.array_equal(released, expected)
        assert "decrypting in the key-holder's process" in caplog.text
        assert "was killed by SIGKILL while decrypting" in caplog.text

        again = decryptor.decrypt(secret, scheme, chunks, parsed)
        assert np.array_equal(again, expected)
        assert len(pool.pids()) == 2 and not set(pool.pids()) & {v.pid for v in victims}
    finally:
        pool.shutdown()


def test_where_workers_cannot_start_the_keyholder_decrypts_itself_after_one_warning(aggregate, monkeypatch):
    scheme, secret, chunks, parsed = aggregate
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    decryptor = Decryptor(DecryptionPool(workers=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = decryptor.decrypt(secret, scheme, chunks, parsed)
        decryptor.decrypt(secret, scheme, chunks, parsed)
    (warning,) = caught
    assert "cannot start HE decryption worker processes" in str(warning.message)
    assert "decrypting in this process" in str(warning.message)
    assert np.array_equal(first, decrypt_chunks(secret.context, parsed))


def test_a_pool_needs_a_worker():
    with pytest.raises(InvalidInput, match="at least one worker"):
        DecryptionPool(workers=0)


def test_decrypted_slots_cross_the_pipe_in_the_dtype_decryption_gives(aggregate):
    scheme, secret, _, parsed = aggregate
    assert decrypt_chunks(secret.context, parsed[:1]).dtype == DECRYPTED_DTYPES[SCHEME_CODES[scheme]]
