"""Private set intersection: correctness, agreement of order, bad input, and the attacks a
peer (or a stranger) can try against the serving party, over real gRPC: mutual TLS between
named parties, or a private Unix socket for both parties in one process."""

from __future__ import annotations

import ast
import gc
import hashlib
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import grpc
import numpy as np
import pytest
import rbcl
from hypothesis import given, settings, strategies as st

from securefl.enrolment import ephemeral_credentials
from securefl.errors import InvalidInput, PayloadTooLarge, PeerRefused, ServiceUnavailable
from securefl.exitcodes import FAILED
from securefl.pki import SITE, PartyName
from securefl.psi import GroupPool, JoinerParty, ServerParty, encode_ids, read_ids
from securefl.psi.group import hash_and_blind, new_scalar
from securefl.psi.hashing import expand_message_xmd, session_dst
from securefl.psi.protocol import Randomness, _checked_count, random_permutation
from securefl.services.psi import PsiService, join, tls_peer
from securefl.services.rpc import channel, start_server
from securefl.simulation import local_psi, local_psi_outcomes, local_psi_size
from securefl.v1 import psi_pb2, psi_pb2_grpc
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, tls_args

ROOT = Path(__file__).resolve().parent.parent
A_IDS = encode_ids([f"id{i}" for i in range(10)])


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
    indices_a, indices_b = local_psi(ids_a, ids_b, workers=0)
    check_alignment(ids_a, ids_b, indices_a, indices_b)


@pytest.mark.parametrize("overlap", [0.0, 0.5, 1.0])
def test_worker_threads_give_the_same_alignment(overlap):
    ids_a = [f"id{i}" for i in range(5000)]
    ids_b = [f"id{i}" for i in range(int(5000 * (1 - overlap)), int(5000 * (1 - overlap)) + 5000)]
    indices_a, indices_b = local_psi(ids_a, ids_b, workers=2)
    check_alignment(ids_a, ids_b, indices_a, indices_b)


def test_cardinality_mode_reveals_only_the_size():
    assert local_psi_size(["a", "b", "c", "d"], ["c", "d", "e"], workers=0) == 2
    assert local_psi_size(["a"], ["b"], workers=0) == 0
    outcome_a, outcome_b = local_psi_outcomes(["a", "b", "c"], ["c", "b"], cardinality_only=True, workers=0)
    assert outcome_a.indices == outcome_b.indices == [] and outcome_a.cardinality == 2


@pytest.mark.parametrize("ids", [[], ["x", "y", "x"]])
def test_empty_or_duplicate_ids_are_refused(ids):
    with pytest.raises(InvalidInput):
        local_psi(ids, ["x"], workers=0)


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


def test_the_protocol_core_imports_neither_grpc_nor_the_transports():
    for module in (ROOT / "securefl" / "psi").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                assert not name.startswith(("grpc", "..services", "securefl.services", "..integrations")), (module, name)
    loaded = subprocess.run([sys.executable, "-c", "import sys, securefl; before = set(sys.modules); "
                             "import securefl.psi.protocol; print(sorted(set(sys.modules) - before))"],
                            capture_output=True, text=True, check=True)
    assert "securefl.psi.protocol" in loaded.stdout and "services" not in loaded.stdout and "grpc" not in loaded.stdout


def test_session_randomness_is_a_fresh_permutation_from_the_os():
    first, second = random_permutation(1000), random_permutation(1000)
    assert sorted(first) == sorted(second) == list(range(1000))
    assert not np.array_equal(first, second)


# --- Party A behind mutual TLS, and the peers that call it ---------------------------------


HOSPITAL = PartyName(SITE, "hospital")


@pytest.fixture(scope="module")
def pki():
    """TLS material of a throwaway federation CA for three sites, and of one site with the
    right name under another CA."""
    names = ("hospital", "insurer", "mallory")
    parties = dict(zip(names, ephemeral_credentials(*(PartyName(SITE, name) for name in names))))
    parties["outsider"] = ephemeral_credentials(PartyName(SITE, "insurer"))[0]  # right name, wrong CA
    return parties


class CountingRandomness(Randomness):
    """System randomness that counts how often a session allocated its permutation."""

    def __init__(self) -> None:
        calls = []
        super().__init__(permutation=lambda n: calls.append(n) or random_permutation(n))
        object.__setattr__(self, "calls", calls)


class PartyA:
    """Party A serving A_IDS to `insurer` over mutual TLS, plus channels for any caller."""

    def __init__(self, pki, session_timeout: float = 60.0, ids=A_IDS, max_peer_set=None) -> None:
        self.pki = pki
        self.finished = []
        self.randomness = CountingRandomness()
        self.party = ServerParty(ids, GroupPool(0), expected_peer="insurer", max_peer_set=max_peer_set,
                                 session_timeout=session_timeout, randomness=self.randomness)
        service = PsiService(self.party, tls_peer, on_finish=self.finished.append)
        self.server, self.port = start_server(service.register, "127.0.0.1", 0, workers=8, tls=pki["hospital"])
        self._channels = []

    def channel(self, caller: str) -> grpc.Channel:
        opened = channel(f"127.0.0.1:{self.port}", self.pki[caller], server=HOSPITAL)
        self._channels.append(opened)
        return opened

    def stub(self, caller: str = "insurer") -> psi_pb2_grpc.PsiStub:
        return psi_pb2_grpc.PsiStub(self.channel(caller))

    def close(self) -> None:
        for opened in self._channels:
            opened.close()
        self.server.stop(0)


@pytest.fixture
def party_a(pki):
    served = PartyA(pki)
    yield served
    served.close()


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def blinded(session_id: bytes, ids: list[bytes]) -> bytes:
    return hash_and_blind(ids, session_dst(session_id), new_scalar())


def blind_stream(stub, session_id, batches):
    return list(stub.BlindJoinerPoints(iter([psi_pb2.PointBatch(session_id=session_id, points=b) for b in batches])))


def complete_exchange(stub, joiner_ids: list[bytes]) -> bytes:
    """Start, send B's points and fetch A's: everything but Finish. Returns the session id."""
    session = stub.Start(psi_pb2.PsiStart(joiner_size=len(joiner_ids)))
    blind_stream(stub, session.session_id, [blinded(session.session_id, joiner_ids)])
    list(stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=session.session_id)))
    return session.session_id


def test_the_expected_peer_completes_a_session(party_a):
    session_id = complete_exchange(party_a.stub(), encode_ids(["x", "y"]))
    finished = party_a.stub().Finish(psi_pb2.PsiMatches(session_id=session_id, server_positions=[3], cardinality=1))
    assert finished.cardinality == 1 and len(party_a.finished) == 1 and party_a.party.live_session is None


def test_an_unexpected_peer_is_refused_on_every_call_and_allocates_nothing(party_a):
    mallory = party_a.stub("mallory")
    calls = [
        lambda: mallory.Start(psi_pb2.PsiStart(joiner_size=2)),
        lambda: blind_stream(mallory, b"\x00" * 16, [blinded(b"\x00" * 16, [b"x"])]),
        lambda: list(mallory.ServerPoints(psi_pb2.PsiSessionRef(session_id=b"\x00" * 16))),
        lambda: mallory.Finish(psi_pb2.PsiMatches(session_id=b"\x00" * 16)),
    ]
    for call in calls:
        error = refused(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "'mallory' is not the peer" in error.details()
    assert party_a.party.live_session is None and party_a.randomness.calls == []


def test_an_unexpected_peer_cannot_touch_the_expected_peers_session(party_a):
    session = party_a.stub().Start(psi_pb2.PsiStart(joiner_size=2))
    mallory = party_a.stub("mallory")
    error = refused(lambda: blind_stream(mallory, session.session_id, [blinded(session.session_id, [b"x", b"y"])]))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    blind_stream(party_a.stub(), session.session_id, [blinded(session.session_id, [b"x", b"y"])])  # still intact


def test_a_certificate_from_another_ca_cannot_even_connect(party_a):
    error = refused(lambda: party_a.stub("outsider").Start(psi_pb2.PsiStart(joiner_size=2), timeout=5))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ServiceUnavailable, match="certificate chains to the other's CA"):
        join(party_a.channel("outsider"), JoinerParty(encode_ids(["x"]), GroupPool(0)))
    assert party_a.party.live_session is None


def test_calls_without_an_authenticated_peer_are_refused():
    party = ServerParty(A_IDS, GroupPool(0), expected_peer="insurer")
    server, port = start_server(PsiService(party, tls_peer).register, "127.0.0.1", 0, workers=2, insecure=True)
    try:
        with channel(f"127.0.0.1:{port}", insecure=True) as plain:
            error = refused(lambda: psi_pb2_grpc.PsiStub(plain).Start(psi_pb2.PsiStart(joiner_size=2)))
    finally:
        server.stop(0)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "no authenticated peer" in error.details()
    assert party.live_session is None


def test_an_oversized_peer_set_is_refused_before_any_allocation(party_a):
    error = refused(lambda: party_a.stub().Start(psi_pb2.PsiStart(joiner_size=2 * len(A_IDS) + 1)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-peer-set" in error.details()
    assert party_a.party.live_session is None and party_a.randomness.calls == []
    party_a.stub().Start(psi_pb2.PsiStart(joiner_size=2 * len(A_IDS)))  # the limit itself is accepted


def test_the_joiner_refuses_an_oversized_serving_set_before_any_work(pki):
    served = PartyA(pki, ids=encode_ids([f"id{i}" for i in range(50)]))
    try:
        with pytest.raises(PayloadTooLarge, match="serving party announced a set of 50"):
            join(served.channel("insurer"), JoinerParty(encode_ids([f"id{i}" for i in range(10)]), GroupPool(0)))
        assert served.party.live_session.step.name == "STARTED"  # B sent no point
    finally:
        served.close()


def test_a_second_concurrent_session_is_refused(party_a):
    first = party_a.stub().Start(psi_pb2.PsiStart(joiner_size=2))
    error = refused(lambda: party_a.stub().Start(psi_pb2.PsiStart(joiner_size=2)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "already under way" in error.details()
    assert party_a.party.live_session.session_id == first.session_id


def test_an_expired_session_is_freed_and_the_slot_reopens(pki):
    served = PartyA(pki, session_timeout=0.3)
    try:
        session = served.stub().Start(psi_pb2.PsiStart(joiner_size=2))
        live = weakref.ref(served.party.live_session)
        deadline = time.monotonic() + 10
        while live() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
            gc.collect()
        assert live() is None and served.party.live_session is None  # secret and permutation are gone
        error = refused(lambda: blind_stream(served.stub(), session.session_id, [blinded(session.session_id, [b"x", b"y"])]))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        served.stub().Start(psi_pb2.PsiStart(joiner_size=2))
    finally:
        served.close()


def test_finish_before_a_complete_exchange_is_refused_and_writes_nothing(party_a):
    stub = party_a.stub()
    session = stub.Start(psi_pb2.PsiStart(joiner_size=2))
    finish = psi_pb2.PsiMatches(session_id=session.session_id, server_positions=[0], cardinality=1)
    assert refused(lambda: stub.Finish(finish)).code() == grpc.StatusCode.FAILED_PRECONDITION
    error = refused(lambda: list(stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=session.session_id))))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # A's points only after B's
    blind_stream(stub, session.session_id, [blinded(session.session_id, [b"x", b"y"])])
    assert refused(lambda: stub.Finish(finish)).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert party_a.finished == []
    list(stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=session.session_id)))
    bad = psi_pb2.PsiMatches(session_id=session.session_id, server_positions=[0, 0], cardinality=2)
    assert refused(lambda: stub.Finish(bad)).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert party_a.finished == []  # bad input changed nothing: a valid Finish still completes
    stub.Finish(finish)
    assert [o.cardinality for o in party_a.finished] == [1]
    assert refused(lambda: stub.Finish(finish)).code() == grpc.StatusCode.NOT_FOUND


def test_the_joiner_cannot_have_more_points_blinded_under_one_secret(party_a):
    stub = party_a.stub()
    session = stub.Start(psi_pb2.PsiStart(joiner_size=2))
    blind_stream(stub, session.session_id, [blinded(session.session_id, [b"x", b"y"])])
    error = refused(lambda: blind_stream(stub, session.session_id, [blinded(session.session_id, [b"z", b"w"])]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("batches", [[b"\xff" * 64], [b"\x01" * 33]])
def test_invalid_points_are_refused_and_end_the_session(party_a, batches):
    stub = party_a.stub()
    session = stub.Start(psi_pb2.PsiStart(joiner_size=2))
    error = refused(lambda: blind_stream(stub, session.session_id, batches))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert party_a.party.live_session is None
    retry = refused(lambda: blind_stream(stub, session.session_id, [blinded(session.session_id, [b"x", b"y"])]))
    assert retry.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("sent, announced", [(1, 2), (3, 2)])
def test_a_peer_sending_another_count_than_announced_is_refused(party_a, sent, announced):
    stub = party_a.stub()
    session = stub.Start(psi_pb2.PsiStart(joiner_size=announced))
    error = refused(lambda: blind_stream(stub, session.session_id, [blinded(session.session_id, [b"y%d" % i for i in range(sent)])]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "announced" in error.details()


def test_unknown_sessions_are_refused(party_a):
    error = refused(lambda: list(party_a.stub().ServerPoints(psi_pb2.PsiSessionRef(session_id=b"\x00" * 16))))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_each_session_uses_a_fresh_secret_and_a_fresh_order(party_a):
    stub = party_a.stub()
    served = []
    for _ in range(2):
        session = stub.Start(psi_pb2.PsiStart(joiner_size=1))
        blind_stream(stub, session.session_id, [blinded(session.session_id, [b"x"])])
        points = b"".join(b.points for b in stub.ServerPoints(psi_pb2.PsiSessionRef(session_id=session.session_id)))
        stub.Finish(psi_pb2.PsiMatches(session_id=session.session_id))
        served.append({points[i:i + 32] for i in range(0, len(points), 32)})
    assert len(served[0]) == len(A_IDS) and not served[0] & served[1]


def test_joiner_refuses_a_wrong_count_or_repeated_points_from_the_server():
    with pytest.raises(InvalidInput, match="announced"):
        _checked_count(iter([b"\x01" * 32]), 2)
    with pytest.raises(InvalidInput, match="twice"):
        _checked_count(iter([b"\x01" * 64]), 2)


def test_a_dictionary_attack_is_refused_by_authorization_and_the_cap(pki):
    """The attack of issue 9: A holds 1,000 IDs; a peer probes with 20,000 guesses that
    include all of them. A stranger is refused outright; even the expected peer may bring at
    most twice A's set, and is refused before A does any work."""
    ids_a = encode_ids([f"patient-{i}" for i in range(1000)])
    guesses = encode_ids([f"patient-{i}" for i in range(20_000)])
    served = PartyA(pki, ids=ids_a)
    try:
        with pytest.raises(PeerRefused):
            join(served.channel("mallory"), JoinerParty(guesses, GroupPool(0)))
        with pytest.raises(PayloadTooLarge):
            join(served.channel("insurer"), JoinerParty(guesses, GroupPool(0)))
        assert served.party.live_session is None and served.randomness.calls == [] and served.finished == []
    finally:
        served.close()


# --- What A sees of B's row order -----------------------------------------------------------


def fixed_scalar(label: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_scalar_reduce(hashlib.sha512(label).digest())


class RecordingService(PsiService):
    """Party A's service, recording every message it receives, in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[tuple[str, bytes]] = []

    def _tap(self, method, messages):
        for message in messages:
            self.received.append((method, message.SerializeToString()))
            yield message

    def Start(self, request, context):
        return super().Start(next(self._tap("Start", [request])), context)

    def BlindJoinerPoints(self, request_iterator, context):
        return super().BlindJoinerPoints(self._tap("BlindJoinerPoints", request_iterator), context)

    def ServerPoints(self, request, context):
        return super().ServerPoints(next(self._tap("ServerPoints", [request])), context)

    def Finish(self, request, context):
        return super().Finish(next(self._tap("Finish", [request])), context)


def a_view(pki, ids_b: list[bytes], b_shuffle) -> tuple[list, list[int]]:
    """Everything A receives in one session with fixed secrets and A's fixed order; B shuffles
    with `b_shuffle(n)`. Returns A's received messages and B's aligned rows."""
    ids_a = encode_ids([f"p{i}" for i in range(0, 60, 2)])
    a_random = Randomness(scalar=lambda: fixed_scalar(b"a"), permutation=lambda n: np.arange(n)[::-1].copy(),
                          session_id=lambda: b"s" * 16)
    party = ServerParty(ids_a, GroupPool(0), expected_peer="insurer", randomness=a_random)
    service = RecordingService(party, tls_peer)
    server, port = start_server(service.register, "127.0.0.1", 0, workers=4, tls=pki["hospital"])
    try:
        b_random = Randomness(scalar=lambda: fixed_scalar(b"b"), permutation=b_shuffle)
        with channel(f"127.0.0.1:{port}", pki["insurer"], server=HOSPITAL) as to_a:
            outcome = join(to_a, JoinerParty(ids_b, GroupPool(0), randomness=b_random))
    finally:
        server.stop(0)
    return service.received, outcome.indices


def b_lists() -> tuple[list[bytes], list[bytes]]:
    ids_b = encode_ids([f"p{i}" for i in range(40)])  # 20 of them are A's
    permuted = [ids_b[i] for i in np.random.default_rng(7).permutation(len(ids_b))]
    return ids_b, permuted


def test_a_view_is_independent_of_b_row_order(pki):
    """Run twice with B's rows permuted. B's shuffle is uniform, so any sent order is as likely
    under either input; couple the two runs on the same sent order (the same draw of B's fresh
    randomness, relabelled) and A must receive byte-identical messages, positions included."""
    views = []
    for ids_b in b_lists():
        received, indices_b = a_view(pki, ids_b, b_shuffle=lambda n, ids=ids_b: np.argsort(ids, kind="stable"))
        assert {ids_b[j] for j in indices_b} == set(encode_ids([f"p{i}" for i in range(0, 40, 2)]))  # B's own rows
        views.append(received)
    assert [method for method, _ in views[0]] == ["Start", "BlindJoinerPoints", "ServerPoints", "Finish"]
    assert views[0] == views[1]


def test_without_b_shuffle_a_view_reveals_b_row_order(pki):
    """The check above can fail: with B sending in its row order (the old behaviour), the same
    two inputs give A different views."""
    views = [a_view(pki, ids_b, b_shuffle=np.arange)[0] for ids_b in b_lists()]
    assert views[0] != views[1]


# --- No multiprocessing trap, whatever the entry point -------------------------------------

ENTRY_CODE = (
    "from securefl.simulation import local_psi\n"
    "a = [f'id{i}' for i in range(3000)]\n"
    "b = [f'id{i}' for i in range(2000, 6000)]\n"
    "ia, ib = local_psi(a, b, workers=2)\n"
    "assert [a[i] for i in ia] == [b[j] for j in ib] and len(ia) == 1000\n"
    "print('aligned', len(ia))\n"
)


@pytest.mark.parametrize("entry", ["stdin", "-c", "script without a main guard"])
def test_local_psi_works_from_any_entry_point(tmp_path, entry):
    if entry == "stdin":
        command, stdin = [sys.executable, "-"], ENTRY_CODE
    elif entry == "-c":
        command, stdin = [sys.executable, "-c", ENTRY_CODE], None
    else:
        (tmp_path / "align.py").write_text(ENTRY_CODE)
        command, stdin = [sys.executable, str(tmp_path / "align.py")], None
    run = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "aligned 1000" and "Exception iterating" not in run.stderr


def test_local_psi_works_from_a_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(local_psi(["a", "b", "c"], ["c", "a", "z"], workers=2)))
    worker.start()
    worker.join(timeout=60)
    check_alignment(["a", "b", "c"], ["c", "a", "z"], *results[0])


# --- The commands ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enrolment(tmp_path_factory):
    return enrol_with_cli(tmp_path_factory.mktemp("enrolment"), "hospital", "insurer", "mallory")


def start_psi_serve(tmp_path, enrolment) -> tuple[subprocess.Popen, str]:
    serve = subprocess.Popen([sys.executable, "-m", "securefl", "psi", "serve", "--ids", str(tmp_path / "a.txt"),
                              "--out", str(tmp_path / "a.idx"), "--peer", "insurer", *tls_args(enrolment, "hospital"),
                              "--port", "0", "--ready-file", str(tmp_path / "ready")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=PASSPHRASE_ENV)
    for _ in range(300):
        if (tmp_path / "ready").exists() or serve.poll() is not None:
            break
        time.sleep(0.1)
    return serve, (tmp_path / "ready").read_text().splitlines()[0]


def psi_join_command(tmp_path, port: str, enrolment, site: str, out: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "securefl", "psi", "join", f"127.0.0.1:{port}", "--ids",
                           str(tmp_path / "b.csv"), "--column", "patient", "--out", str(tmp_path / out),
                           "--peer", "hospital", *tls_args(enrolment, site)],
                          capture_output=True, text=True, timeout=120, env=PASSPHRASE_ENV)


def test_psi_serve_refuses_a_stranger_then_writes_indices_for_its_peer(tmp_path, enrolment):
    (tmp_path / "a.txt").write_text("".join(f"p{i}\n" for i in range(200)))
    (tmp_path / "b.csv").write_text("patient,age\n" + "".join(f"p{i},40\n" for i in range(150, 400)))
    serve, port = start_psi_serve(tmp_path, enrolment)
    try:
        stranger = psi_join_command(tmp_path, port, enrolment, "mallory", "m.idx")
        assert stranger.returncode == FAILED and "not the peer" in stranger.stderr and "Traceback" not in stranger.stderr
        assert not (tmp_path / "a.idx").exists() and serve.poll() is None
        joined = psi_join_command(tmp_path, port, enrolment, "insurer", "b.idx")
        assert joined.returncode == 0, joined.stderr
        assert serve.wait(timeout=30) == 0
    finally:
        serve.kill()
    rows_a = [int(x) for x in (tmp_path / "a.idx").read_text().split()]
    rows_b = [int(x) for x in (tmp_path / "b.idx").read_text().split()]
    assert len(rows_a) == 50 and [f"p{i}" for i in rows_a] == [f"p{150 + j}" for j in rows_b]
    assert all((tmp_path / name).stat().st_mode & 0o777 == 0o600 for name in ("a.idx", "b.idx"))
