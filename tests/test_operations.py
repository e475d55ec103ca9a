"""What a supervisor and an operator rely on, over real processes and sockets: the standard gRPC
health service (NOT_SERVING until ready and while draining), a graceful SIGTERM that lets a
running submission finish and exits 0, and structured logs that never hold a key, a passphrase,
a ciphertext or an update."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import grpc
import numpy as np
import pytest

from securefl.keyfiles import IDENTITY_PASSPHRASE_ENV
from securefl.logs import JsonLines, RedactData
from securefl.pki import AGGREGATOR, KEYHOLDER, SITE
from securefl.services.health import Health, check, service_name
from securefl.services.rpc import channel, start_server
from securefl.simulation import LocalFederation
from securefl.v1 import aggregator_pb2
from tests.conftest import run_round
from tests.scrape import scrape
from tests.submissions import RawAggregator


def health_of(federation: LocalFederation, port: int, role: str, service: str = "") -> str:
    with channel(f"127.0.0.1:{port}", federation.credentials(SITE, "site-1"),
                 server=federation.federation.party(role)) as ch:
        return check(ch, service)


def test_health_is_not_serving_until_the_service_says_it_is_ready():
    health = Health(service_name(aggregator_pb2, "Aggregator"))
    server, port = start_server(lambda s: None, "127.0.0.1", 0, insecure=True, health=health)
    try:
        with channel(f"127.0.0.1:{port}", insecure=True) as ch:
            assert check(ch) == check(ch, "securefl.v1.Aggregator") == "NOT_SERVING"
            health.serving()
            assert check(ch) == check(ch, "securefl.v1.Aggregator") == "SERVING"
            health.draining()
            health.serving()  # ignored once draining: a shutdown is not undone
            assert check(ch) == "NOT_SERVING"
    finally:
        server.stop(0)


def test_every_service_reports_serving_behind_mutual_tls():
    with LocalFederation(2, scheme="ckks") as fed:
        assert health_of(fed, fed.aggregator.port, AGGREGATOR, "securefl.v1.Aggregator") == "SERVING"
        assert health_of(fed, fed.keyholder.port, KEYHOLDER, "securefl.v1.KeyHolder") == "SERVING"
        with channel(f"127.0.0.1:{fed.aggregator.port}", insecure=True) as plaintext:
            with pytest.raises(grpc.RpcError) as refused:
                check(plaintext)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no certificate, no answer


def held_stream(raw: RawAggregator, site_index: int, round_id: str, release: threading.Event):
    submission = raw.build(raw._federation.identities[site_index], np.full(4, 2.0), 1.0, round_id)
    messages = list(submission.messages())

    def stream():
        yield messages[0]
        release.wait(30)
        yield from messages[1:]

    return raw.stub_as(SITE, submission.receipt.client_id).Submit.future(stream(), timeout=60)


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_drains_lets_a_running_submission_finish_and_exits_zero():
    """During the drain the aggregator says NOT_SERVING, refuses new submissions with
    UNAVAILABLE, still finishes and acknowledges the one under way; the acknowledged
    submission is in the store at the next start."""
    with LocalFederation(2, scheme="plain", metrics=True, service_args=["--shutdown-grace", "20"]) as fed:
        raw = RawAggregator(fed)
        release = threading.Event()
        running = held_stream(raw, 0, "draining", release)
        wait_for(lambda: scrape(fed.aggregator)[("securefl_submissions_in_flight", ())] == 1)
        fed.aggregator.process.terminate()
        wait_for(lambda: health_of(fed, fed.aggregator.port, AGGREGATOR) == "NOT_SERVING")
        late = raw.build(fed.identities[1], np.ones(4), 1.0, "draining")
        with pytest.raises(Exception) as refused:
            raw.submit(late)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in str(refused.value)
        release.set()
        ack = running.result(timeout=20)
        assert ack.contributors == 1
        assert fed.aggregator.process.wait(timeout=20) == 0
        fed.restart_aggregator()
        assert RawAggregator(fed).round_info("draining").contributors == 1


def test_a_stream_still_running_after_the_grace_period_is_cancelled_and_the_exit_is_still_clean():
    with LocalFederation(2, scheme="plain", metrics=True, service_args=["--shutdown-grace", "1"]) as fed:
        raw = RawAggregator(fed)
        release = threading.Event()
        stuck = held_stream(raw, 0, "stuck", release)
        wait_for(lambda: scrape(fed.aggregator)[("securefl_submissions_in_flight", ())] == 1)
        started = time.monotonic()
        fed.aggregator.process.terminate()
        assert fed.aggregator.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        release.set()
        with pytest.raises(grpc.RpcError):
            stuck.result(timeout=10)
        assert "cancelled" in (fed.workdir / "aggregator.log").read_text()
        fed.restart_aggregator()
        with pytest.raises(grpc.RpcError) as missing:
            RawAggregator(fed).round_info("stuck")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing half-written


# -- logs -----------------------------------------------------------------------------------------

MARKER = 1234.5677
LONG_ENCODED = re.compile(r"[A-Za-z0-9+/=]{100,}")  # a ciphertext, key or update, base64 or hex
BYTES_REPR = re.compile(r"\\x[0-9a-f]{2}")


def leaks(text: str, secrets: list[str]) -> list[str]:
    """What in `text` looks like data or a secret."""
    found = [secret[:12] for secret in secrets if secret in text]
    found += LONG_ENCODED.findall(text) + BYTES_REPR.findall(text)[:1]
    found += [str(MARKER)] if str(MARKER) in text or f"{MARKER:g}" in text else []
    return found


def test_the_logs_of_a_whole_round_hold_no_key_passphrase_ciphertext_or_update(tmp_path):
    """Both services at debug level in JSON lines through a CKKS round, a refused submission
    and the shutdown. The control shows the search finds each kind of secret when present."""
    with LocalFederation(2, scheme="ckks", workdir=tmp_path,
                         service_args=["--log-format", "json", "--log-level", "debug"]) as fed:
        raw = RawAggregator(fed)
        run_round(fed.clients, [np.full(300, MARKER)] * 2, [1.0, 1.0], round_id="logged")
        replay = raw.build(fed.identities[0], np.full(300, MARKER), 1.0, "logged")
        with pytest.raises(Exception):
            raw.submit(replay)  # refused: the round is over
        passphrase = fed.aggregator.env[IDENTITY_PASSPHRASE_ENV]
        keys = [fed.credentials(role, party).private_key.decode() for role, party in
                ((AGGREGATOR, "aggregator"), (KEYHOLDER, "keyholder"))]
        key_lines = [line for key in keys for line in key.splitlines() if "PRIVATE KEY" not in line and len(line) > 20]
        ciphertext = replay.chunks[0]
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("aggregator", "keyholder")}  # shutdown too
    secrets = [passphrase, *key_lines, ciphertext.hex()[:64]]
    for name, text in logs.items():
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert len(records) >= 3 and all({"time", "level", "logger", "message"} <= set(r) for r in records), name
        assert not leaks(text, secrets), name
    assert "stopped" in logs["aggregator"] and "RoundClosed" in logs["aggregator"]
    control = "\n".join([passphrase, key_lines[0], ciphertext.hex(), repr(ciphertext[:40]), str(MARKER)])
    assert len(leaks(control, secrets)) >= 5


def test_data_given_to_a_log_call_is_replaced_by_its_size():
    record = logging.LogRecord("securefl.test", logging.DEBUG, __file__, 1, "chunk %s of %s: %r", (
        b"\x01\x02secret", np.full(3, MARKER), {"k": 1}), None)
    RedactData().filter(record)
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "chunk <8 bytes> of <ndarray (3,)>: {'k': 1}"
    assert not leaks(line["message"], [])
