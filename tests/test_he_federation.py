"""HE secure aggregation end to end (bfv and ckks): real key-holder and aggregator processes,
real gRPC over mutual TLS, clients of the library."""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import psutil
import pytest
import torch

from securefl.client import connect
from securefl.errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, MalformedCiphertext, PayloadTooLarge, PermissionDenied,
    QuorumTimeout, RoundClosed, ServiceUnavailable, SpecMismatch, UnknownRound, VerificationFailed,
)
from securefl.federation import PartyKey
from securefl.he.epochs import EpochSettings
from securefl.identity import Identity, sign_receipt
from securefl.pki import SITE
from securefl.schemes import ClientPins, client_scheme
from securefl.v1 import aggregator_pb2
from securefl.rounds.chunks import BLAKE3, SHA256, ChunkDigest
from securefl.simulation import LocalFederation, SecAggSettings
from tests.conftest import run_round, weighted_average
from tests.submissions import RawAggregator

SHAPE = (40, 150)  # 6,000 values + weight: one BFV ciphertext (k = 2), two CKKS ones
SETTINGS = SecAggSettings(value_bound=8.0, max_weight=8.0)  # tight bounds: precision is relative to them
_round_ids = (f"test-round-{i}" for i in itertools.count())


@pytest.fixture(scope="module", params=["bfv", "ckks"])
def federation(request):
    with LocalFederation(3, scheme=request.param, secagg=SETTINGS) as fed:
        yield fed


@pytest.fixture(scope="module")
def raw(federation):
    return RawAggregator(federation)


def updates(rng, n=3):
    return [{"w": rng.normal(size=SHAPE).astype(np.float32), "b": rng.normal(size=7)} for _ in range(n)]


def tolerance(federation: LocalFederation, weights: list[float], expected: np.ndarray, length: int = 6008) -> np.ndarray:
    """The stated bound on each averaged value: bfv, one quantization step per client and field
    (stochastic rounding) in the weighted sum and the weight sum; ckks, six standard deviations
    of the flooding plus the decryption tolerance."""
    codec = EpochSettings.of(RawAggregator(federation).session.he_epoch).codec(federation.rotate_every)
    m = len(weights)
    per_sum = m / codec.plan.scale if codec.scheme == "bfv" else 6 * codec.flooding_sigma(m, length) + codec.tolerance(m)
    return per_sum * (1 + np.abs(expected)) / sum(weights)


def assert_close(federation, result, ups, weights, key="w"):
    expected = weighted_average([u[key] for u in ups], weights)
    assert np.all(np.abs(result[key].astype(np.float64) - expected) <= tolerance(federation, weights, expected))


def test_weighted_average_is_within_the_stated_bound(federation, rng):
    ups, weights = updates(rng), [1.0, 2.0, 3.5]
    results = run_round(federation.clients, ups, weights)
    for result in results:
        assert_close(federation, result, ups, weights, "w")
        assert_close(federation, result, ups, weights, "b")
    assert results[0]["w"].dtype == np.float32 and results[0]["b"].dtype == np.float64
    stats = federation.clients[0].last_stats
    ciphertexts = 1 if federation.scheme == "bfv" else 2  # k = 2 values per BFV slot; one per CKKS slot
    assert stats.values == 6008 and ciphertexts * 131_072 < stats.bytes_sent < ciphertexts * 132_000


def test_torch_state_dict_in_torch_state_dict_out(federation):
    models = [torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4)) for _ in range(3)]
    for model in models:
        model(torch.randn(6, 8))
    states = [m.state_dict() for m in models]
    results = run_round(federation.clients, states, [1, 2, 3])
    averaged = results[0]
    assert set(averaged) == set(states[0])
    expected = weighted_average([s["0.weight"].numpy() for s in states], [1, 2, 3])
    assert isinstance(averaged["0.weight"], torch.Tensor)
    assert np.all(np.abs(averaged["0.weight"].numpy() - expected) <= tolerance(federation, [1, 2, 3], expected))
    assert averaged["1.num_batches_tracked"].dtype == torch.int64 and averaged["1.num_batches_tracked"].item() == 1


def test_a_keyholder_with_decryption_workers_decrypts_a_large_aggregate_on_them(federation, rng, monkeypatch):
    """With `decryption_workers` the key-holder decrypts above eight ciphertexts on its own
    children (each holding the secret key for one release only); the release is what it would
    decrypt itself."""
    monkeypatch.setenv("SECUREFL_KEYHOLDER_DECRYPTION_WORKERS", "2")
    ups = [{"w": rng.normal(size=(300, 600)).astype(np.float32)} for _ in range(3)]  # 11 BFV, 44 CKKS ciphertexts
    weights = [1.0, 2.0, 3.5]
    with LocalFederation(3, scheme=federation.scheme, secagg=SETTINGS) as with_workers:
        result = run_round(with_workers.clients, ups, weights)[0]
        children = psutil.Process(with_workers.keyholder.process.pid).children()
        workers = [child.cmdline()[-3:] for child in children]
        expected = weighted_average([u["w"] for u in ups], weights)
        assert np.all(np.abs(result["w"] - expected) <= tolerance(with_workers, weights, expected, 180_001))
    assert len(workers) == 2 and all(cmdline == ["-m", "securefl.he.worker", "--decrypt"] for cmdline in workers)


def _garbage_chunk(s, raw):
    s.chunks[0] = b"\x00garbage" * 40


def _truncate(s, raw):
    s.chunks.pop()


def _replace_chunk_with_another_valid_one(s, raw):
    s.chunks[0] = raw.build(raw._federation.identities[1], {"w": np.ones(SHAPE, np.float32), "b": np.ones(7)}, 1.0,
                            s.receipt.round_id).chunks[0]


def _set(attribute, value, on_receipt=True):
    def tamper(s, raw):
        setattr(s.receipt if on_receipt else s, attribute, value)
    return tamper


def _another_key_epoch(s, raw):
    s.receipt.key_epoch += 1


def _runs(make):
    """Stream the (unchanged, validly signed) chunks in the runs `make` makes of them."""
    def tamper(s, raw):
        s.runs = make(s.chunks)
    return tamper


BAD_SUBMISSIONS = {
    # name: (identity index or "outsider", tamper, sign after tampering, expected error, expected status)
    "duplicate": (0, None, True, DuplicateSubmission, grpc.StatusCode.ALREADY_EXISTS),
    "wrong_length": (1, lambda s, raw: setattr(s.receipt, "vector_length", s.receipt.vector_length - 1), True,
                     LengthMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    "chunk_count_disagrees": (1, _set("chunk_count", 5, on_receipt=False), True, LengthMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    "wrong_spec": (1, _set("spec_hash", b"\x01" * 32), True, SpecMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    "wrong_scheme": (1, _set("scheme", "plain"), True, SpecMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    "another_key_epoch": (1, _another_key_epoch, True, SpecMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    "no_sealed_seed": (1, _set("sealed_seed", b""), True, InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    "malformed_ciphertext": (1, _garbage_chunk, True, MalformedCiphertext, grpc.StatusCode.INVALID_ARGUMENT),
    "truncated_stream": (1, _truncate, False, InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    "chunks_not_matching_signed_digest": (1, _replace_chunk_with_another_valid_one, False, VerificationFailed, grpc.StatusCode.UNAUTHENTICATED),
    "run_not_starting_at_the_next_chunk": (1, _runs(lambda c: [(1, c)]), False, InvalidInput,
                                           grpc.StatusCode.INVALID_ARGUMENT),
    "empty_run": (1, _runs(lambda c: [(0, []), (0, c)]), False, InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    "chunk_repeated_at_the_end_of_a_run": (1, _runs(lambda c: [(0, c + c[:1])]), False, InvalidInput,
                                           grpc.StatusCode.INVALID_ARGUMENT),
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
    bad = raw.build(identity, ups[0], 3.0, round_id, tamper=tamper, sign_after_tamper=sign_after)
    with pytest.raises(error) as refused:
        raw.submit(bad)
    assert refused.value.code == status
    assert raw.round_info(round_id).contributors == 1

    results = run_round(federation.clients[1:], ups[1:], weights[1:], round_id=round_id)
    assert_close(federation, results[0], ups, weights)


def test_a_receipt_digesting_its_chunks_with_another_hash_than_the_session_names_is_refused(federation, raw, rng):
    """The session names the hash a receipt digests the chunks with (BLAKE3). A site's receipt
    that signs the SHA-256 of exactly the chunks it sends binds them just as well, but it is not
    what this aggregator checks: refused as a digest mismatch, nothing counted, and the same
    site's receipt made as the session says is then taken."""
    assert raw.session.receipt_digest == BLAKE3
    round_id = next(_round_ids)
    raw.open_round(round_id, min_clients=1, expected_clients=3)
    site, update = federation.identities[0], updates(rng)[0]
    other_hash = raw.build(site, update, 1.0, round_id)
    other_hash.receipt.digest = ChunkDigest.of(other_hash.chunks, SHA256)
    sign_receipt(site, other_hash.receipt)
    with pytest.raises(VerificationFailed, match="signed digest") as refused:
        raw.submit(other_hash)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raw.round_info(round_id).contributors == 0

    raw.submit(raw.build(site, update, 1.0, round_id))
    assert raw.round_info(round_id).contributors == 1


def test_a_site_refuses_an_aggregator_naming_a_receipt_digest_it_does_not_know(federation, raw):
    session = aggregator_pb2.Session()
    session.CopyFrom(raw.session)
    session.receipt_digest = "md5"
    with pytest.raises(InvalidInput, match="upgrade securefl"):
        client_scheme(session, federation.identities[0], ClientPins(federation.federation))


def test_late_submission_to_a_finished_round_is_refused(federation, raw, rng):
    round_id = next(_round_ids)
    ups = updates(rng)
    run_round(federation.clients, ups, [1, 1, 1], round_id=round_id)
    with pytest.raises(RoundClosed) as refused:
        raw.submit(raw.build(federation.identities[0], ups[0], 1.0, round_id))
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_client_refuses_an_epoch_not_signed_by_the_pinned_keyholder(federation, rng):
    """An aggregator relaying a key of its own (or of another key-holder) is refused: the site
    pins the key-holder's Ed25519 key in federation.json, not anything the aggregator sends."""
    site = federation.identities[0]
    pins = dataclasses.replace(federation.federation, keyholder=PartyKey("keyholder", Identity.generate("x").public_bytes))
    client = connect(federation.aggregator_address, identity=site, federation=pins,
                     tls=federation.credentials(SITE, site.client_id))
    with pytest.raises(VerificationFailed, match="pinned key-holder"):
        client.aggregate(updates(rng)[0], timeout=10)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
def test_client_refuses_invalid_weights(federation, rng, weight):
    with pytest.raises(InvalidInput, match="weight"):
        federation.clients[0].aggregate(updates(rng)[0], weight=weight)


@pytest.mark.parametrize("update, weight, message", [
    ({"w": np.ones(10)}, SETTINGS.max_weight * 2, "outside"), ({"w": np.array([1.0, np.nan])}, 1.0, "NaN"),
])
def test_a_refused_update_leaves_no_round_behind(federation, raw, update, weight, message):
    with pytest.raises(InvalidInput, match=message):
        federation.clients[0].aggregate(update, weight=weight, round_id="never-joined")
    with pytest.raises(grpc.RpcError) as missing:
        raw.round_info("never-joined")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_round_without_quorum_times_out_and_nothing_is_released(rng):
    with LocalFederation(3, min_clients=3, round_timeout=1.5, secagg=SETTINGS) as fed:
        with pytest.raises(QuorumTimeout, match="deadline"):
            run_round(fed.clients[:2], updates(rng, 2), [1, 1])
        assert fed.audit_log() == []


def test_round_closes_at_deadline_with_quorum_when_a_client_drops(rng):
    with LocalFederation(3, min_clients=2, round_timeout=1.5, secagg=SETTINGS) as fed:
        ups = updates(rng, 2)
        started = time.monotonic()
        results = run_round(fed.clients[:2], ups, [1, 3])
        assert time.monotonic() - started >= 1.0
        assert_close(fed, results[0], ups, [1, 3])
        assert [entry["decision"] for entry in fed.audit_log()] == ["released"]


def test_keys_rotate_every_n_rounds_and_clients_follow_without_repinning(rng):
    with LocalFederation(2, rotate_every=2, secagg=SETTINGS) as fed:
        for _ in range(5):
            run_round(fed.clients, [rng.normal(size=100) for _ in range(2)], [1.0, 2.0])
        released = [entry for entry in fed.audit_log() if entry["decision"] == "released"]
        assert [int(re.search(r"key epoch (\d+);", e["detail"]).group(1)) for e in released] == [1, 1, 2, 2, 3]


def test_operator_opened_rounds_refuse_unknown_round_ids(rng):
    with LocalFederation(2, scheme="plain", implicit_rounds=False) as fed:
        with pytest.raises(UnknownRound):
            fed.clients[0].aggregate(updates(rng, 1)[0], round_id="never-opened")


def test_acknowledged_submissions_survive_an_aggregator_restart(rng):
    with LocalFederation(3, secagg=SETTINGS) as fed:
        raw = RawAggregator(fed)
        ups, weights = updates(rng), [1.0, 2.0, 3.0]
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(fed.clients[i].aggregate, ups[i], weight=weights[i], round_id="r1", timeout=60)
                       for i in (0, 1)]
            raw.wait_for_contributors("r1", 2)
            fed.restart_aggregator()
            last = fed.clients[2].aggregate(ups[2], weight=weights[2], round_id="r1", timeout=60)
            results = [f.result(timeout=60) for f in waiting] + [last]
        for result in results:
            assert_close(fed, result, ups, weights)


def test_a_waiting_client_gives_up_with_a_clear_error_when_the_aggregator_is_gone(rng, monkeypatch):
    """Without a timeout, a client whose aggregator vanished stops after RECONNECT_SECONDS."""
    import securefl.client

    monkeypatch.setattr(securefl.client, "RECONNECT_SECONDS", 2.0)
    with LocalFederation(2, secagg=SETTINGS) as fed:
        raw = RawAggregator(fed)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(fed.clients[0].aggregate, updates(rng, 1)[0], round_id="r1")
            raw.wait_for_contributors("r1", 1)
            fed.aggregator.stop()
            with pytest.raises(ServiceUnavailable, match="aggregator was unreachable for"):
                waiting.result(timeout=30)


def test_more_clients_than_default_server_threads_complete_a_round(rng):
    """Every client holds a long-poll call while others still submit: the aggregator must
    not run out of server threads (it sizes its pool by the roster)."""
    with LocalFederation(40, scheme="plain") as fed:
        updates = [rng.normal(size=16) for _ in range(40)]
        results = run_round(fed.clients, updates, [1.0] * 40)
        assert np.allclose(results[-1], np.mean(updates, axis=0), atol=1e-6)
