"""CKKS secure aggregation end to end: real key-holder and aggregator processes, real gRPC."""

from __future__ import annotations

import itertools
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch

from securefl.errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, MalformedCiphertext, PayloadTooLarge, PermissionDenied,
    QuorumTimeout, RoundClosed, SpecMismatch, UnknownRound, VerificationFailed,
)
from securefl.client import connect
from securefl.identity import Identity
from securefl.pki import SITE
from securefl.simulation import LocalFederation
from tests.conftest import relative_error, run_round, weighted_average
from tests.submissions import RawAggregator

SHAPE = (40, 150)  # 6,000 values + weight: two ciphertexts of 4,096 slots
_round_ids = (f"test-round-{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(3, scheme="ckks") as fed:
        yield fed


@pytest.fixture(scope="module")
def raw(federation):
    return RawAggregator(federation)


def updates(rng, n=3):
    return [{"w": rng.normal(size=SHAPE).astype(np.float32), "b": rng.normal(size=7)} for _ in range(n)]


def test_weighted_average_matches_plaintext_within_1e_4(federation, rng):
    ups, weights = updates(rng), [1.0, 2.0, 3.5]
    results = run_round(federation.clients, ups, weights)
    for key in ("w", "b"):
        expected = weighted_average([u[key] for u in ups], weights)
        for result in results:
            assert relative_error(result[key].astype(np.float64), expected) < 1e-4
    assert results[0]["w"].dtype == np.float32 and results[0]["b"].dtype == np.float64
    stats = federation.clients[0].last_stats
    assert stats.values == 6008 and 2 * 131_072 < stats.bytes_sent < 2 * 132_000  # two full ciphertexts


def test_torch_state_dict_in_torch_state_dict_out(federation):
    models = [torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4)) for _ in range(3)]
    for model in models:
        model(torch.randn(6, 8))
    states = [m.state_dict() for m in models]
    results = run_round(federation.clients, states, [10, 20, 30])
    averaged = results[0]
    assert set(averaged) == set(states[0])
    expected = weighted_average([s["0.weight"].numpy() for s in states], [10, 20, 30])
    assert isinstance(averaged["0.weight"], torch.Tensor)
    assert relative_error(averaged["0.weight"].numpy().astype(np.float64), expected) < 1e-4
    assert averaged["1.num_batches_tracked"].dtype == torch.int64 and averaged["1.num_batches_tracked"].item() == 1


def _garbage_chunk(s, raw):
    s.chunks[0] = b"\x00garbage" * 40


def _truncate(s, raw):
    s.chunks.pop()


def _replace_chunk_with_another_valid_one(s, raw):
    s.chunks[0] = raw.protect(np.ones(raw.session.chunk_values))[0]


def _set(attribute, value, on_receipt=True):
    def tamper(s, raw):
        setattr(s.receipt if on_receipt else s, attribute, value)
    return tamper


BAD_SUBMISSIONS = {
    # name: (identity index or "outsider", tamper, sign after tampering, expected error, expected status)
    "duplicate": (0, None, True, DuplicateSubmission, grpc.StatusCode.ALREADY_EXISTS),
    "wrong_length": (1, lambda s, raw: setattr(s.receipt, "vector_length", s.receipt.vector_length - 1), True,
                     LengthMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    "chunk_count_disagrees": (1, _set("chunk_count", 5, on_receipt=False), True, LengthMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    "wrong_spec": (1, _set("spec_hash", b"\x01" * 32), True, SpecMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    "wrong_scheme": (1, _set("scheme", "plain"), True, SpecMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    "malformed_ciphertext": (1, _garbage_chunk, True, MalformedCiphertext, grpc.StatusCode.INVALID_ARGUMENT),
    "truncated_stream": (1, _truncate, False, InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    "chunks_not_matching_signed_digest": (1, _replace_chunk_with_another_valid_one, False, VerificationFailed, grpc.StatusCode.UNAUTHENTICATED),
    "forged_signature": (1, _set("signature", bytes(64)), False, VerificationFailed, grpc.StatusCode.UNAUTHENTICATED),
    "oversized_vector": (1, _set("vector_length", 1 << 40), True, PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    "unknown_client": ("outsider", None, True, PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    "malformed_round_id": (1, _set("round_id", "../../etc"), True, InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("case", BAD_SUBMISSIONS, ids=BAD_SUBMISSIONS.keys())
def test_bad_submission_is_refused_and_leaves_the_round_intact(federation, raw, rng, case):
    who, tamper, sign_after, error, status = BAD_SUBMISSIONS[case]
    round_id = next(_round_ids)
    raw.open_round(round_id, min_clients=3, expected_clients=3)
    ups, weights = updates(rng), [2.0, 1.0, 1.0]
    raw.submit(raw.build(federation.identities[0], ups[0], weights[0], round_id))  # sets the round's shape

    identity = Identity.generate("outsider") if who == "outsider" else federation.identities[who]
    bad = raw.build(identity, ups[0], 9.0, round_id, tamper=tamper, sign_after_tamper=sign_after)
    with pytest.raises(error) as refused:
        raw.submit(bad)
    assert refused.value.code == status
    assert raw.round_info(round_id).contributors == 1

    results = run_round(federation.clients[1:], ups[1:], weights[1:], round_id=round_id)
    expected = weighted_average([u["w"] for u in ups], weights)
    assert relative_error(results[0]["w"].astype(np.float64), expected) < 1e-4


def test_late_submission_to_a_finished_round_is_refused(federation, raw, rng):
    round_id = next(_round_ids)
    ups = updates(rng)
    run_round(federation.clients, ups, [1, 1, 1], round_id=round_id)
    with pytest.raises(RoundClosed) as refused:
        raw.submit(raw.build(federation.identities[0], ups[0], 1.0, round_id))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_client_refuses_an_aggregator_relaying_another_key(federation, rng):
    site = federation.identities[0]
    client = connect(federation.aggregator_address, identity=site, federation=federation.federation,
                     tls=federation.credentials(SITE, site.client_id), keyholder_fingerprint=bytes(32))
    with pytest.raises(VerificationFailed, match="pinned"):
        client.aggregate(updates(rng)[0], timeout=10)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
def test_client_refuses_invalid_weights(federation, rng, weight):
    with pytest.raises(InvalidInput, match="weight"):
        federation.clients[0].aggregate(updates(rng)[0], weight=weight)


def test_client_refuses_updates_that_would_overflow_the_ckks_range(federation):
    with pytest.raises(InvalidInput, match="smaller weight"):
        federation.clients[0].aggregate({"w": np.full(10, 1e6)}, weight=1000)


def test_round_without_quorum_times_out_and_nothing_is_decrypted(rng):
    with LocalFederation(3, scheme="ckks", min_clients=3, round_timeout=1.5) as fed:
        with pytest.raises(QuorumTimeout, match="deadline"):
            run_round(fed.clients[:2], updates(rng, 2), [1, 1])
        audit = sqlite3.connect(fed.workdir / "keyholder.db").execute("SELECT decision FROM audit").fetchall()
        assert ("decrypted",) not in audit


def test_round_closes_at_deadline_with_quorum_when_a_client_drops(rng):
    with LocalFederation(3, scheme="ckks", min_clients=2, round_timeout=1.5) as fed:
        ups = updates(rng, 2)
        started = time.monotonic()
        results = run_round(fed.clients[:2], ups, [1, 3])
        assert time.monotonic() - started >= 1.0
        assert relative_error(results[0]["w"].astype(np.float64), weighted_average([u["w"] for u in ups], [1, 3])) < 1e-4


def test_operator_opened_rounds_refuse_unknown_round_ids(rng):
    with LocalFederation(2, scheme="plain", implicit_rounds=False) as fed:
        with pytest.raises(UnknownRound):
            fed.clients[0].aggregate(updates(rng, 1)[0], round_id="never-opened")


def test_acknowledged_submissions_survive_an_aggregator_restart(rng):
    with LocalFederation(3, scheme="ckks") as fed:
        raw = RawAggregator(fed)
        ups, weights = updates(rng), [1.0, 2.0, 3.0]
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(fed.clients[i].aggregate, ups[i], weight=weights[i], round_id="r1", timeout=60)
                       for i in (0, 1)]
            raw.wait_for_contributors("r1", 2)
            fed.restart_aggregator()
            last = fed.clients[2].aggregate(ups[2], weight=weights[2], round_id="r1", timeout=60)
            results = [f.result(timeout=60) for f in waiting] + [last]
        expected = weighted_average([u["w"] for u in ups], weights)
        for result in results:
            assert relative_error(result["w"].astype(np.float64), expected) < 1e-4


def test_more_clients_than_default_server_threads_complete_a_round(rng):
    """Every client holds a long-poll call while others still submit: the aggregator must
    not run out of server threads (it sizes its pool by the roster)."""
    with LocalFederation(40, scheme="plain") as fed:
        updates = [rng.normal(size=16) for _ in range(40)]
        results = run_round(fed.clients, updates, [1.0] * 40)
        assert np.allclose(results[-1], np.mean(updates, axis=0), atol=1e-6)
