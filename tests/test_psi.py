"""Private set intersection: correctness, agreement of order, privacy-relevant properties and
bad input, over real gRPC on localhost."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
import rbcl
from hypothesis import given, settings, strategies as st

from securefl.enrolment import ephemeral_credentials
from securefl.errors import InvalidInput
from securefl.pki import SITE, PartyName
from securefl.psi import intersection_size_local, run_local
from securefl.psi.group import GroupPool, hash_and_blind, new_scalar
from securefl.psi.hashing import expand_message_xmd, session_dst
from securefl.psi.ids import encode_ids, read_ids
from securefl.psi.protocol import ServerParty
from securefl.psi.service import PsiService, _checked_count
from securefl.services.rpc import channel, start_server
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, tls_args
from securefl.v1 import psi_pb2, psi_pb2_grpc


@pytest.mark.parametrize("message, expected", [
    (b"", "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235"),
    (b"abc", "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"),
])
def test_expand_message_xmd_matches_rfc_9380_vectors(message, expected):
    dst = b"QUUX-V01-CS02-with-expander-SHA256-128"
    assert expand_message_xmd(message, dst, 0x20, "sha256").hex() == expected


def test_hash_to_group_is_deterministic_per_session_and_separated_across_sessions():
    scalar = new_scalar()
    one = hash_and_blind([b"alice", b"bob"], session_dst(b"1" * 16), scalar)
    assert one == hash_and_blind([b"alice", b"bob"], session_dst(b"1" * 16), scalar)
    assert one != hash_and_blind([b"alice", b"bob"], session_dst(b"2" * 16), scalar)
    assert all(rbcl.crypto_core_ristretto255_is_valid_point(one[i:i + 32]) for i in (0, 32))


def check_alignment(ids_a, ids_b, indices_a, indices_b):
    expected = set(ids_a) & set(ids_b)
    assert len(indices_a) == len(indices_b) == len(expected)
    assert [ids_a[i] for i in indices_a] == [ids_b[j] for j in indices_b]  # row by row
    assert {ids_a[i] for i in indices_a} == expected


@settings(max_examples=12, deadline=None)
@given(size_a=st.integers(1, 120), size_b=st.integers(1, 120), overlap=st.floats(0.0, 1.0), seed=st.integers(0, 10**6))
def test_result_equals_plain_intersection_for_any_overlap(size_a, size_b, overlap, seed):
    shared = int(min(size_a, size_b) * overlap)
    ids_a = [f"a{seed}-{i}" for i in range(size_a - shared)] + [f"s{seed}-{i}" for i in range(shared)]
    ids_b = [f"s{seed}-{i}" for i in range(shared)][::-1] + [f"b{seed}-{i}" for i in range(size_b - shared)]
    indices_a, indices_b = run_local(ids_a, ids_b, workers=0)
    check_alignment(ids_a, ids_b, indices_a, indices_b)


@pytest.mark.parametrize("overlap", [0.0, 0.5, 1.0])
def test_worker_processes_give_the_same_alignment(overlap):
    ids_a = [f"id{i}" for i in range(5000)]
    ids_b = [f"id{i}" for i in range(int(5000 * (1 - overlap)), int(5000 * (1 - overlap)) + 5000)]
    indices_a, indices_b = run_local(ids_a, ids_b, workers=2)
    check_alignment(ids_a, ids_b, indices_a, indices_b)


def test_cardinality_mode_reveals_only_the_size():
    assert intersection_size_local(["a", "b", "c", "d"], ["c", "d", "e"], workers=0) == 2
    assert intersection_size_local(["a"], ["b"], workers=0) == 0


@pytest.mark.parametrize("ids", [[], ["x", "y", "x"]])
def test_empty_or_duplicate_ids_are_refused(ids):
    with pytest.raises(InvalidInput):
        run_local(ids, ["x"], workers=0)


def test_undecodable_id_file_names_the_line(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_bytes(b"good\nalso good\n\xff\xfe bad\n")
    with pytest.raises(InvalidInput, match="line 3"):
        read_ids(path)


def test_csv_column_is_read_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("patient,age\np1,40\np2,51\n")
    assert read_ids(path, "patient") == [b"p1", b"p2"]
    with pytest.raises(InvalidInput, match="no column 'id'"):
        read_ids(path, "id")


@pytest.fixture
def psi_server():
    pool = GroupPool(0)
    party = ServerParty(encode_ids([f"id{i}" for i in range(10)]), pool)
    server_name = PartyName(SITE, "party-a")
    tls_a, tls_b = ephemeral_credentials(server_name, PartyName(SITE, "party-b"))
    server, port = start_server(PsiService(party).register, "127.0.0.1", 0, workers=4, tls=tls_a)
    stub = psi_pb2_grpc.PsiStub(channel(f"127.0.0.1:{port}", tls_b, server=server_name))
    yield stub, party
    server.stop(0)


def _blind_stream(stub, session_id, batches):
    messages = [psi_pb2.PointBatch(session_id=session_id, points=b) for b in batches]
    return list(stub.BlindJoinerPoints(iter(messages)))


def test_invalid_points_from_the_peer_are_refused(psi_server):
    stub, _ = psi_server
    session = stub.Start(psi_pb2.PsiStart(joiner_size=2))
    with pytest.raises(grpc.RpcError) as refused:
        _blind_stream(stub, session.session_id, [b"\xff" * 64])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid ristretto255" in refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        _blind_stream(stub, session.session_id, [b"\x01" * 33])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("sent, announced", [(1, 2), (3, 2)])
def test_a_peer_sending_another_count_than_announced_is_refused(psi_server, sent, announced):
    stub, _ = psi_server
    session = stub.Start(psi_pb2.PsiStart(joiner_size=announced))
    points = hash_and_blind([f"y{i}".encode() for i in range(sent)], session_dst(session.session_id), new_scalar())
    with pytest.raises(grpc.RpcError) as refused:
        _blind_stream(stub, session.session_id, [points])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "announced" in refused.value.details()


def test_unknown_sessions_are_refused(psi_server):
    stub, _ = psi_server
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=b"\x00" * 16)))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_each_session_uses_a_fresh_secret_and_a_fresh_order(psi_server):
    stub, _ = psi_server
    first, second = (stub.Start(psi_pb2.PsiStart(joiner_size=1)) for _ in range(2))
    points = [b"".join(b.points for b in stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=s.session_id)))
              for s in (first, second)]
    chunks = [{p[i:i + 32] for i in range(0, len(p), 32)} for p in points]
    assert not chunks[0] & chunks[1]


def test_joiner_refuses_a_wrong_count_or_repeated_points_from_the_server():
    with pytest.raises(InvalidInput, match="announced"):
        _checked_count(iter([b"\x01" * 32]), 2)
    with pytest.raises(InvalidInput, match="twice"):
        _checked_count(iter([b"\x01" * 64]), 2)


def test_psi_serve_and_join_commands_write_aligned_indices_over_mutual_tls(tmp_path):
    enrolment = enrol_with_cli(tmp_path / "enrolment", "hospital", "insurer")
    (tmp_path / "a.txt").write_text("".join(f"p{i}\n" for i in range(200)))
    (tmp_path / "b.csv").write_text("patient,age\n" + "".join(f"p{i},40\n" for i in range(150, 400)))
    serve = subprocess.Popen([sys.executable, "-m", "securefl", "psi", "serve", "--ids", str(tmp_path / "a.txt"),
                              "--out", str(tmp_path / "a.idx"), "--port", "0", "--ready-file", str(tmp_path / "ready"),
                              *tls_args(enrolment, "hospital"), "--peer", "insurer"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=PASSPHRASE_ENV)
    try:
        for _ in range(300):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.1)
        port = (tmp_path / "ready").read_text()
        joined = subprocess.run([sys.executable, "-m", "securefl", "psi", "join", f"127.0.0.1:{port}", "--ids",
                                 str(tmp_path / "b.csv"), "--column", "patient", "--out", str(tmp_path / "b.idx"),
                                 *tls_args(enrolment, "insurer"), "--peer", "hospital"],
                                capture_output=True, text=True, timeout=120, env=PASSPHRASE_ENV)
        assert joined.returncode == 0, joined.stderr
        assert serve.wait(timeout=30) == 0
    finally:
        serve.kill()
    rows_a = [int(x) for x in (tmp_path / "a.idx").read_text().split()]
    rows_b = [int(x) for x in (tmp_path / "b.idx").read_text().split()]
    assert len(rows_a) == 50 and [f"p{i}" for i in rows_a] == [f"p{150 + j}" for j in rows_b]
    assert all((tmp_path / name).stat().st_mode & 0o777 == 0o600 for name in ("a.idx", "b.idx"))
