"""The aggregator's memory is bounded by its in-flight budget and given back when streams end,
against many clients at once and against an enrolled client attacking it, over real gRPC.

The attack first reported: one enrolled stream announcing 2^28 values and resending a valid
chunk grew the aggregator from 109 to 523 MiB, and the memory stayed after the stream ended."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from securefl.benchmark.process import PeakMemory
from securefl.errors import InvalidInput, LengthMismatch, PayloadTooLarge
from securefl.identity import sign_receipt
from securefl.pki import SITE
from securefl.rounds.chunks import ChunkDigest
from securefl.services.rpc import from_rpc_error
from securefl.simulation import LocalFederation
from securefl.v1 import aggregator_pb2, common_pb2
from tests.conftest import run_round
from tests.submissions import RawAggregator

BUDGET_MB = 16
HUGE = 1 << 28


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def settled_rss_mib(pid: int, seconds: float = 1.0, samples: int = 5) -> float:
    """The least resident memory of `samples` readings over 0.1 s each, after `seconds`."""
    time.sleep(seconds)
    readings = []
    for _ in range(samples):
        readings.append(rss_mib(pid))
        time.sleep(0.1)
    return min(readings)


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(4, scheme="plain", aggregator_args=["--max-inflight-mb", str(BUDGET_MB)]) as fed:
        yield fed


def attack(raw: RawAggregator, identity, round_id: str, vector_length: int, resends: int):
    """A signed header announcing `vector_length` values, then one valid chunk sent over and
    over with increasing indices. Returns the error the aggregator answered with."""
    chunk = np.ones(raw.session.chunk_values, dtype="<f4").tobytes()
    receipt = common_pb2.Receipt(round_id=round_id, client_id=identity.client_id, scheme="plain",
                                 spec_hash=bytes(32), vector_length=vector_length, digest=ChunkDigest.of([chunk]))
    sign_receipt(identity, receipt)
    count = -(-vector_length // raw.session.chunk_values)

    def messages():
        yield aggregator_pb2.SubmitMessage(header=aggregator_pb2.SubmissionHeader(receipt=receipt, chunk_count=count))
        for index in range(resends):
            yield aggregator_pb2.SubmitMessage(chunks={"first_index": index, "data": [chunk]})

    with pytest.raises(grpc.RpcError) as refused:
        raw.stub_as(SITE, identity.client_id).Submit(messages(), timeout=60)
    return from_rpc_error(refused.value)


def test_an_enrolled_client_announcing_a_huge_vector_is_refused_before_anything_is_held(federation):
    raw = RawAggregator(federation)
    pid = federation.aggregator.pid
    raw.open_round("fixed", min_clients=2, expected_clients=2, vector_length=1_000_001)
    before = settled_rss_mib(pid, 0.2)
    with PeakMemory(pid) as memory:
        assert isinstance(attack(raw, federation.identities[0], "fixed", HUGE, 1500), LengthMismatch)
        assert isinstance(attack(raw, federation.identities[0], "fresh-round", HUGE, 1500), PayloadTooLarge)
    assert memory.peak_mb - before < 8


def test_resending_a_valid_chunk_past_the_announced_length_holds_at_most_one_submission(federation):
    """Measured on the second such stream: the first one's connection and allocator set-up
    (up to 6 MiB seen) stays whatever the aggregator does with the stream."""
    raw = RawAggregator(federation)
    pid = federation.aggregator.pid
    values = 3 * raw.session.chunk_values  # 12 MiB as float32: within the 16 MiB budget
    attack(raw, federation.identities[1], "resent-chunks-warm-up", values, 1500)
    before = settled_rss_mib(pid, 0.2)
    with PeakMemory(pid) as memory:
        refused = attack(raw, federation.identities[1], "resent-chunks", values, 1500)
    assert isinstance(refused, InvalidInput) and "expected chunk 3 of 3" in str(refused)
    assert memory.peak_mb - before < BUDGET_MB + 8
    assert settled_rss_mib(pid) - before < 6  # and given back: under half of the 12 MiB it held stays


def test_many_concurrent_clients_wait_for_memory_instead_of_being_buffered(rng):
    """30 clients send 8 MB each at once (240 MB in flight without admission control); with a
    budget of 8 MiB the aggregator holds one at a time, the others wait under flow control."""
    n = 30
    with LocalFederation(n, scheme="plain", aggregator_args=["--max-inflight-mb", "8"]) as fed:
        run_round(fed.clients, [np.zeros(10, np.float32)] * n, [1.0] * n, round_id="warm-up")
        before = settled_rss_mib(fed.aggregator.pid, 0.5)
        updates = [rng.integers(-64, 64, size=2_000_000).astype(np.float32) / 8 for _ in range(n)]
        with PeakMemory(fed.aggregator.pid, interval=0.005) as memory:
            results = run_round(fed.clients, updates, [1.0] * n, round_id="large")
        expected = np.mean(np.array(updates, dtype=np.float64), axis=0)
        assert np.allclose(results[0], expected, atol=1e-5)
        # 8 MiB of submissions, a 256 KiB window per waiting stream, the sum and the published
        # result (8 MB each), up to a 1 MiB result message per client being sent, and gRPC's and
        # TLS's buffers per connection (80-110 MiB over 20 runs here); unbounded, the uploads
        # alone would be 240 MB
        assert memory.peak_mb - before < 160, f"peak grew by {memory.peak_mb - before:.0f} MiB"
