"""Mutual TLS and the pins, attacked over real sockets: plaintext callers, certificates of
another CA, a site speaking for another, a forged acknowledgement, an aggregator offering its own
SecAgg+ parameters, and an eavesdropper recording a whole round."""

from __future__ import annotations

import dataclasses
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from securefl.client import connect
from securefl.enrolment import ephemeral_credentials
from securefl.errors import InvalidInput, PermissionDenied, VerificationFailed
from securefl.federation import PartyKey, SecurityParameters
from securefl.identity import Identity
from securefl.pki import AGGREGATOR, KEYHOLDER, SITE, PartyName
from securefl.psi.group import GroupPool
from securefl.psi.ids import encode_ids
from securefl.psi.protocol import ServerParty
from securefl.services.psi import PsiService, tls_peer
from securefl.services.rpc import channel, start_server
from securefl.simulation import LocalFederation, SecAggSettings
from securefl.v1 import aggregator_pb2, aggregator_pb2_grpc, keyholder_pb2, keyholder_pb2_grpc, psi_pb2, psi_pb2_grpc
from tests.submissions import RawAggregator

PSI_SERVER = PartyName(SITE, "party-a")


@pytest.fixture(scope="module")
def federation():
    with LocalFederation(2, scheme="bfv", secagg=SecAggSettings(max_weight=10.0)) as fed:
        yield fed


@pytest.fixture(scope="module")
def psi():
    """Party A of PSI, and the TLS material of a party B its CA enrolled."""
    tls_a, tls_b = ephemeral_credentials(PSI_SERVER, PartyName(SITE, "site-1"))
    with GroupPool(0) as pool:
        server, port = start_server(PsiService(ServerParty(encode_ids(["a", "b"]), pool, expected_peer="site-1"), tls_peer).register, "127.0.0.1", 0,
                                    workers=2, tls=tls_a)
        yield f"127.0.0.1:{port}", tls_b
        server.stop(0)


def first_call(service: str, address: str, tls=None, server: PartyName | None = None) -> grpc.StatusCode | None:
    """Make one cheap call to a server; the status it fails with (None if it succeeded)."""
    ch = channel(address, tls, server=server, insecure=tls is None)
    calls = {
        "aggregator": lambda: aggregator_pb2_grpc.AggregatorStub(ch).GetSession(aggregator_pb2.SessionRequest(), timeout=10),
        "keyholder": lambda: keyholder_pb2_grpc.KeyHolderStub(ch).GetEpoch(keyholder_pb2.EpochRequest(), timeout=10),
        "psi": lambda: psi_pb2_grpc.PsiStub(ch).Start(psi_pb2.PsiStart(joiner_size=1), timeout=10),
    }
    try:
        calls[service]()
        return None
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        ch.close()


def servers(federation, psi):
    """service -> (address, the name its certificate carries, an enrolled client's TLS material)."""
    site = federation.credentials(SITE, "site-1")
    return {
        "aggregator": (federation.aggregator_address, federation.federation.party(AGGREGATOR), site),
        "keyholder": (f"127.0.0.1:{federation.keyholder.port}", federation.federation.party(KEYHOLDER), site),
        "psi": (psi[0], PSI_SERVER, psi[1]),
    }


SERVICES = ["aggregator", "keyholder", "psi"]


@pytest.mark.parametrize("service", SERVICES)
def test_every_server_refuses_a_plaintext_client(federation, psi, service):
    address, _, _ = servers(federation, psi)[service]
    assert first_call(service, address) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", SERVICES)
def test_every_server_refuses_a_certificate_from_another_ca(federation, psi, service):
    """The impostor trusts the right CA and names itself like the enrolled site-1, but its
    certificate was issued by a CA of its own. The control: the real site-1 is served."""
    address, name, enrolled = servers(federation, psi)[service]
    impostor = dataclasses.replace(ephemeral_credentials(PartyName(SITE, "site-1"))[0], ca=enrolled.ca)
    assert first_call(service, address, impostor, name) == grpc.StatusCode.UNAVAILABLE
    assert first_call(service, address, enrolled, name) is None


def test_plaintext_needs_an_explicit_insecure_on_both_sides(federation):
    site = federation.identities[0]
    with pytest.raises(InvalidInput, match="--insecure"):
        connect(federation.aggregator_address, identity=site, federation=federation.federation)
    with pytest.raises(InvalidInput, match="--insecure"):
        start_server(lambda server: None, "127.0.0.1", 0)


def test_a_site_cannot_submit_under_another_sites_receipt(federation, rng):
    """site-1's certificate carrying a receipt that site-2 signed (e.g. replayed, or site-2's
    identity key stolen): the TLS identity and the receipt must name the same site."""
    raw = RawAggregator(federation)
    round_id = "tls-mismatch"
    raw.open_round(round_id, min_clients=2, expected_clients=2)
    site_1, site_2 = federation.identities
    stolen = raw.build(site_2, {"w": rng.normal(size=100)}, 1.0, round_id)
    with pytest.raises(PermissionDenied, match="site site-1 may not submit for 'site-2'") as refused:
        raw.submit(stolen, as_site=site_1.client_id)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert raw.round_info(round_id).contributors == 0
    raw.submit(stolen)  # the same submission over site-2's own channel is accepted
    assert raw.round_info(round_id).contributors == 1


def test_a_client_rejects_an_acknowledgement_not_signed_by_the_pinned_aggregator_key(federation, rng):
    """The aggregator signs with its real key; this client pins another one, as it would if the
    server it reached were not the federation's aggregator."""
    pinned_elsewhere = dataclasses.replace(
        federation.federation, aggregator=PartyKey("aggregator", Identity.generate("aggregator").public_bytes))
    site = federation.identities[0]
    client = connect(federation.aggregator_address, identity=site, federation=pinned_elsewhere,
                     tls=federation.credentials(SITE, site.client_id))
    with pytest.raises(VerificationFailed, match="pinned aggregator key"):
        client.aggregate({"w": rng.normal(size=10)}, round_id="forged-ack")
    client.close()


def test_a_client_refuses_secagg_parameters_other_than_the_federations(rng):
    with LocalFederation(3, scheme="secagg", secagg=SecAggSettings(stage_timeout=2.0)) as fed:
        wider = dataclasses.replace(fed.federation, security=SecurityParameters(value_bound=1000.0))
        site = fed.identities[0]
        client = connect(fed.aggregator_address, identity=site, federation=wider, tls=fed.credentials(SITE, site.client_id))
        with pytest.raises(VerificationFailed, match="differs from this site's federation file"):
            client.aggregate(rng.normal(size=10))
        client.close()


# -- what an eavesdropper records -----------------------------------------------------------------


class RecordingRelay:
    """A TCP relay between clients and the aggregator that keeps every byte it forwards, both
    directions: what anyone on the network path sees."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.recorded = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.recorded += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closing = True
        self._listener.close()


MARKER = np.float32(1234.5677)  # the update every site sends, and so the average


def recorded_round(insecure: bool) -> bytes:
    with LocalFederation(2, scheme="plain", insecure=insecure) as fed:
        relay = RecordingRelay(fed.aggregator.port)
        try:
            clients = [connect(f"127.0.0.1:{relay.port}", identity=identity, federation=fed.federation,
                               tls=fed.credentials(SITE, identity.client_id), insecure=insecure,
                               allow_plain=True)  # the plain scheme shows what TLS hides
                       for identity in fed.identities]
            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda c: c.aggregate(np.full(4096, MARKER, dtype=np.float32)), clients))
            assert np.all(results[0] == MARKER)  # the round really ran through the relay
            for client in clients:
                client.close()
        finally:
            relay.close()
        warned = "INSECURE: serving plaintext gRPC" in (fed.workdir / "aggregator.log").read_text()
        assert warned == insecure
        return bytes(relay.recorded)


def test_a_recorded_round_holds_no_plaintext_of_the_update_or_the_average():
    update_pattern = MARKER.astype("<f4").tobytes() * 8  # 8 consecutive values of the update
    average_pattern = MARKER.astype("<f4").tobytes() * 4  # of the published average (float32 for plain)
    clear = recorded_round(insecure=True)
    assert update_pattern in clear and average_pattern in clear, "the search finds them when they are there"
    encrypted = recorded_round(insecure=False)
    assert len(encrypted) > 2 * 4096 * 4  # both updates went through, encrypted
    assert update_pattern not in encrypted and average_pattern not in encrypted
