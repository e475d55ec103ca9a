"""Limits against a misbehaving enrolled site, attacked over real gRPC with mutual TLS: long polls
that would take every server thread, parallel copies of one submission, more submission
streams than a site needs, a flood of new round ids, and callers that are not enrolled sites.
Each attack is refused with RESOURCE_EXHAUSTED or PERMISSION_DENIED, and the honest parties are
served meanwhile."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from securefl.pki import OPERATOR, SITE
from securefl.services.rpc import RUN_BYTES, chunk_message, chunk_runs, run_chunks
from securefl.simulation import LocalFederation
from securefl.v1 import aggregator_pb2
from tests.submissions import RawAggregator

MAX_WAITS = 2
MAX_ROUNDS_PER_SITE = 3


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(3, scheme="plain", service_args=[
        "--max-waits-per-site", str(MAX_WAITS), "--max-open-rounds-per-site", str(MAX_ROUNDS_PER_SITE),
        "--round-retention", "0",
    ]) as fed:
        yield fed


@pytest.fixture(scope="module")
def raw(federation):
    return RawAggregator(federation)


def status_of(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return None


def test_forty_result_waits_of_one_site_cannot_starve_the_others(federation, raw):
    """Without the per-site cap, 40 waiting calls would hold every thread of the aggregator's
    pool (4 parties x 4 + 16 = 32) and GetSession would queue behind them."""
    raw.submit(raw.build(federation.identities[0], np.ones(4), 1.0, "pending"))  # site-1 may wait on it
    attacker = raw.stub_as(SITE, "site-1")
    request = aggregator_pb2.RoundRequest(round_id="pending")
    calls = [attacker.AwaitResult(request, timeout=60) for _ in range(40)]
    try:
        deadline = time.monotonic() + 20
        while sum(call.done() for call in calls) < 40 - MAX_WAITS and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = [call for call in calls if call.done()]
        assert len(refused) == 40 - MAX_WAITS
        assert {call.code() for call in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "long-poll calls" in refused[0].details()
        for party in ((SITE, "site-2"), (OPERATOR, "operator")):
            started = time.monotonic()
            raw.stub_as(*party).GetSession(aggregator_pb2.SessionRequest(), timeout=5)
            assert time.monotonic() - started < 2
    finally:
        for call in calls:
            call.cancel()
    deadline = time.monotonic() + 10  # cancelled waits give their places back
    while status_of(lambda: next(attacker.AwaitResult(request, timeout=1.5))) != grpc.StatusCode.DEADLINE_EXCEEDED:
        assert time.monotonic() < deadline


def test_a_flood_of_new_round_ids_stops_at_the_sites_cap_and_creates_nothing_more(federation, raw):
    flooder = raw.stub_as(SITE, "site-3")
    codes = [status_of(lambda i=i: flooder.JoinRound(aggregator_pb2.JoinRoundRequest(round_id=f"flood-{i}"),
                                                      timeout=10)) for i in range(50)]
    assert codes[:MAX_ROUNDS_PER_SITE] == [None] * MAX_ROUNDS_PER_SITE
    assert set(codes[MAX_ROUNDS_PER_SITE:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert status_of(lambda: raw.round_info(f"flood-{MAX_ROUNDS_PER_SITE}")) == grpc.StatusCode.NOT_FOUND
    assert raw.open_round("operator-still-can", min_clients=1, expected_clients=1).state == "open"


def held_submission(raw, site_index: int, round_id: str, release: threading.Event):
    """A Submit call that sends its header and then waits for `release` before its chunks."""
    submission = raw.build(raw._federation.identities[site_index], np.ones(4), 1.0, round_id)
    return held_stream(raw, submission, release), submission


def held_stream(raw, submission, release: threading.Event):
    """`submission` streamed: its header, then its chunks once `release` is set."""
    messages = list(submission.messages())

    def stream():
        yield messages[0]
        release.wait(30)
        yield from messages[1:]

    stub = raw.stub_as(SITE, submission.receipt.client_id)
    return stub.Submit.future(stream(), timeout=60)


def refused_once_held(site: str, raw, messages) -> grpc.StatusCode | None:
    """Send `messages` (a submission the engine refuses anyway, so retrying changes nothing)
    until the aggregator refuses it for a limit, which it does once the held streams are under
    way; the last status."""
    deadline = time.monotonic() + 15
    while True:
        code = status_of(lambda: raw.stub_as(SITE, site).Submit(iter(messages), timeout=10))
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
            return code
        time.sleep(0.05)


def test_a_site_cannot_stream_two_copies_of_its_submission_to_one_round(federation, raw):
    """Two streams of one signed submission, both holding their chunks back: whichever reaches
    the aggregator second is refused while no chunk of either has been sent (so before any is
    read); the other completes and counts once."""
    release = threading.Event()
    submission = raw.build(federation.identities[1], np.ones(4), 1.0, "one-stream")
    calls = [held_stream(raw, submission, release) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while not any(call.done() for call in calls):
            assert time.monotonic() < deadline, "neither stream was refused while both held their chunks"
            time.sleep(0.02)
        ended_while_held = [call for call in calls if call.done()]
    finally:
        release.set()
    assert len(ended_while_held) == 1 and ended_while_held[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    other = next(call for call in calls if call is not ended_while_held[0])
    assert other.result().contributors == 1  # the other stream completes and counts once
    assert raw.round_info("one-stream").contributors == 1


def test_a_site_holds_at_most_two_submission_streams(federation, raw):
    """The third stream (badly signed, so a retry changes nothing) is refused before its header
    is read once two are under way."""
    release = threading.Event()
    held = [held_submission(raw, 2, f"flood-{i}", release)[0] for i in range(2)]  # rounds site-3 joined
    third = raw.build(federation.identities[2], np.ones(4), 1.0, "flood-2")
    third.receipt.signature = bytes(64)
    try:
        assert refused_once_held("site-3", raw, list(third.messages())) == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        release.set()
    assert [call.result().contributors for call in held] == [1, 1]


def test_a_caller_that_is_not_an_enrolled_site_creates_no_round(federation, raw):
    """Authentication and validation come first: a certificate of the federation's CA for an
    unenrolled site, and the operator acting as a site, are refused before any round exists."""
    for role, party in ((SITE, "stranger"), (OPERATOR, "operator")):
        caller = raw.stub_as(role, party)
        assert status_of(lambda: caller.JoinRound(aggregator_pb2.JoinRoundRequest(round_id="not-created"),
                                                  timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    assert status_of(lambda: raw.round_info("not-created")) == grpc.StatusCode.NOT_FOUND


def test_a_late_contributor_fetches_the_result_of_an_evicted_round(federation, raw):
    """Retention 0: the round leaves memory as soon as it ends; its result is read back from
    the store, still only for its contributors."""
    for index in range(3):
        raw.submit(raw.build(federation.identities[index], np.full(4, float(index)), 1.0, "evicted"))
    time.sleep(0.3)  # ended, and evicted at the next tick
    late = list(raw.stub_as(SITE, "site-1").AwaitResult(aggregator_pb2.RoundRequest(round_id="evicted"), timeout=10))
    assert late[0].header.contributors == 3
    average = np.frombuffer(b"".join(m.chunk.data for m in late[1:]), dtype=late[0].header.dtype or "<f8")
    assert average.size == 4 and np.allclose(average, 1.0)
    assert raw.round_info("evicted").state == "complete"


def test_on_a_plaintext_server_the_sites_of_one_process_are_not_one_party():
    """The clients of one process share one connection, so a plaintext server (which has no
    TLS identity to go by) must not take them for one party: six sites upload at once, over
    the per-site limits of streams (2) and waits (4) had they been one, and every round ends."""
    with LocalFederation(6, scheme="plain", insecure=True) as fed:
        barrier = threading.Barrier(len(fed.clients))
        updates = [np.full(500_000, float(i), np.float32) for i in range(len(fed.clients))]
        for round_number in range(3):
            results = [None] * len(fed.clients)

            def take_part(i: int) -> None:
                results[i] = fed.clients[i].aggregate(updates[i], weight=1.0, round_id=f"shared-{round_number}",
                                                      before_upload=barrier.wait, timeout=60)

            threads = [threading.Thread(target=take_part, args=(i,)) for i in range(len(fed.clients))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert all(result is not None and np.allclose(result, 2.5) for result in results)


@pytest.mark.parametrize("sizes", [[100, 600_000, 600_000, 2_000_000, 10, 10], [131_217] * 20, [1 << 20] * 3, [5]])
def test_chunks_travel_in_runs_of_at_most_a_mebibyte_and_arrive_whole_and_in_order(sizes):
    chunks = [bytes([index]) * size for index, size in enumerate(sizes)]
    messages = list(chunk_runs(aggregator_pb2.SubmitMessage, chunks))
    assert [data for message in messages for _, data in run_chunks(message.chunks)] == chunks
    assert [index for message in messages for index, _ in run_chunks(message.chunks)] == list(range(len(chunks)))
    for message in messages:  # a chunk over the limit travels alone; else a run stays within it
        assert len(message.chunks.data) == 1 or sum(map(len, message.chunks.data)) <= RUN_BYTES
    assert len(messages) < len(chunks) or all(a + b > RUN_BYTES for a, b in zip(sizes, sizes[1:]))


def test_a_client_from_before_chunk_runs_sending_one_chunk_per_message_is_counted(federation, raw):
    """The session names the run size; a client that does not know it sends a Chunk per
    message, as before runs, and the aggregator still counts its submission."""
    assert raw.session.chunk_run_bytes == RUN_BYTES
    submission = raw.build(federation.identities[0], np.ones(600_000), 1.0, "single-chunks")
    assert len(submission.chunks) > 1
    messages = [next(submission.messages())] + [chunk_message(aggregator_pb2.SubmitMessage, index, data)
                                                for index, data in enumerate(submission.chunks)]
    ack = raw.stub_as(SITE, submission.receipt.client_id).Submit(iter(messages), timeout=30)
    assert ack.contributors == 1 and raw.round_info("single-chunks").contributors == 1
