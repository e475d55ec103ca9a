"""The Prometheus endpoints of the aggregator and the key-holder, scraped after real rounds over
mutual TLS: every counter moves by exactly what happened, and no metric names a site."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from securefl.pki import KEYHOLDER, SITE
from securefl.services.rpc import channel
from securefl.simulation import LocalFederation
from securefl.v1 import keyholder_pb2, keyholder_pb2_grpc
from tests.conftest import run_round
from tests.scrape import scrape
from tests.submissions import RawAggregator


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def scraped():
    """A completed round, a submission refused for coming late, a round failed at its deadline
    with one of two contributions, and a decryption asked for by a site; then one scrape of
    each endpoint."""
    with LocalFederation(2, scheme="ckks", metrics=True) as fed:
        raw = RawAggregator(fed)
        run_round(fed.clients, [np.full(100, 1.0), np.full(100, 3.0)], [1.0, 1.0], round_id="complete")
        late = raw.build(fed.identities[0], np.full(100, 1.0), 1.0, "complete")
        with pytest.raises(Exception):
            raw.submit(late)
        raw.open_round("deadline", min_clients=2, expected_clients=2, timeout_seconds=0.5)
        lonely = raw.build(fed.identities[1], np.full(100, 1.0), 1.0, "deadline")
        raw.submit(lonely)
        raw.wait_for_contributors("deadline", 1)
        stub = keyholder_pb2_grpc.KeyHolderStub(channel(f"127.0.0.1:{fed.keyholder.port}",
                                                        fed.credentials(SITE, "site-1"),
                                                        server=fed.federation.party(KEYHOLDER)))
        header = keyholder_pb2.DecryptHeader(round_id="complete", vector_length=4, chunk_count=1)
        with pytest.raises(grpc.RpcError):
            list(stub.Decrypt(iter([keyholder_pb2.DecryptMessage(header=header)]), timeout=10))
        for _ in range(100):
            if raw.round_info("deadline").state == "failed":
                break
            time.sleep(0.05)
        accepted_bytes = 2 * sum(len(c) for c in late.chunks) + sum(len(c) for c in lonely.chunks)
        yield scrape(fed.aggregator), scrape(fed.keyholder), accepted_bytes, (fed.workdir / "aggregator.log").read_text()


def test_round_counters_move_by_what_happened(scraped):
    aggregator, _, _, _ = scraped
    assert value(aggregator, "securefl_rounds_opened_total") == 2
    assert value(aggregator, "securefl_rounds_ended_total", outcome="complete", reason="") == 1
    assert value(aggregator, "securefl_rounds_ended_total", outcome="failed", reason="QuorumTimeout") == 1
    assert value(aggregator, "securefl_round_duration_seconds_count", outcome="complete") == 1
    assert value(aggregator, "securefl_round_duration_seconds_count", outcome="failed") == 1
    assert value(aggregator, "securefl_open_rounds") == 0


def test_submission_counters_move_by_what_happened(scraped):
    aggregator, _, accepted_bytes, _ = scraped
    assert value(aggregator, "securefl_submissions_accepted_total") == 3
    assert value(aggregator, "securefl_submissions_refused_total", error="RoundClosed") == 1
    assert sum(v for (name, _), v in aggregator.items() if name == "securefl_submissions_refused_total") == 1
    # the late submission was refused before its chunks were read
    assert value(aggregator, "securefl_ingested_bytes_total") == accepted_bytes
    assert value(aggregator, "securefl_submissions_in_flight") == 0
    assert value(aggregator, "securefl_stage_duration_seconds_count", stage="submission") == 3
    assert value(aggregator, "securefl_stage_duration_seconds_count", stage="collect") == 1
    assert value(aggregator, "securefl_stage_duration_seconds_count", stage="reveal") == 1
    assert value(aggregator, "process_resident_memory_bytes") > 0


def test_decryptions_granted_and_refused_are_counted_by_the_key_holder(scraped):
    _, keyholder, _, _ = scraped
    assert value(keyholder, "securefl_decryptions_total", decision="granted", reason="") == 1
    assert value(keyholder, "securefl_decryptions_total", decision="refused", reason="PermissionDenied") == 1


def test_no_metric_names_a_site_or_a_round(scraped):
    aggregator, keyholder, _, log = scraped
    labels = {value for samples in (aggregator, keyholder) for (_, pairs) in samples for _, value in pairs}
    assert not any(("site-" in label or "deadline" in label) for label in labels)
    assert "metrics on http://127.0.0.1:" in log  # plaintext, on the loopback interface only
