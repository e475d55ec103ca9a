"""The protection schemes by name: the one place that maps a scheme's name to its client half
and its server half. Everything else (client.py, the transports) goes through these two
functions and never branches on a scheme's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidInput, VerificationFailed
from .federation import Federation
from .he.epochs import EpochVerifier
from .he.scheme import BFV, CKKS, HeClient, HeServer, KeyHolderLink
from .identity import Identity, Roster
from .masking.client import SecAggClient
from .masking.server import SECAGG, SecAggServer
from .rounds.plain import PLAIN, PlainClient, PlainServer
from .rounds.chunks import RECEIPT_DIGEST, receipt_digest_of
from .rounds.scheme import ClientScheme, ServerScheme
from .v1 import aggregator_pb2

SCHEMES = (BFV, CKKS, SECAGG, PLAIN)
HE_SCHEMES = (BFV, CKKS)  # the schemes that need a key-holder
DEFAULT_SCHEME = BFV


@dataclass(frozen=True)
class ClientPins:
    """What a site pins out of band and never takes from the aggregator."""

    federation: Federation  # the roster, the aggregator's and the key-holder's keys, the security parameters
    allow_plain: bool = False  # the plain scheme protects nothing: a site opts in to it explicitly


@dataclass(frozen=True)
class ServerOptions:
    """What the aggregator's operator configures, for whichever scheme it runs."""

    federation: Federation  # the enrolment: roster and the security parameters sites pin
    min_clients: int
    keyholder: KeyHolderLink | None = None
    stage_timeout: float = 30.0  # interactive schemes: how long a stage waits for the silent


def _keyholder_key(federation: Federation, scheme: str) -> bytes:
    if federation.keyholder is None:
        raise InvalidInput(f"the {scheme} scheme needs a key-holder enrolled in federation.json")
    return federation.keyholder.public_key


def _he_client(name: str) -> Callable[[aggregator_pb2.Session, Identity, ClientPins], ClientScheme]:
    def make(session: aggregator_pb2.Session, identity: Identity, pins: ClientPins) -> ClientScheme:
        return HeClient(name, session, identity, EpochVerifier(_keyholder_key(pins.federation, name)))
    return make


def _he_server(name: str) -> Callable[[ServerOptions], ServerScheme]:
    def make(options: ServerOptions) -> ServerScheme:
        if options.keyholder is None:
            raise InvalidInput(f"the {name} scheme needs the key-holder's address (--keyholder)")
        return HeServer(name, options.keyholder, _keyholder_key(options.federation, name))
    return make


_CLIENTS: dict[str, Callable[[aggregator_pb2.Session, Identity, ClientPins], ClientScheme]] = {
    PLAIN: lambda session, identity, pins: PlainClient(session.chunk_values),
    BFV: _he_client(BFV),
    CKKS: _he_client(CKKS),
    SECAGG: lambda session, identity, pins: SecAggClient(session, identity, pins.federation),
}
_SERVERS: dict[str, Callable[[ServerOptions], ServerScheme]] = {
    PLAIN: lambda options: PlainServer(),
    BFV: _he_server(BFV),
    CKKS: _he_server(CKKS),
    SECAGG: lambda options: SecAggServer.configured(options.federation, options.min_clients, options.stage_timeout),
}


def _known(name: str) -> None:
    if name not in _SERVERS:
        raise InvalidInput(f"unknown scheme {name!r:.40}; choose one of {', '.join(SCHEMES)}")


def client_scheme(session: aggregator_pb2.Session, identity: Identity, pins: ClientPins) -> ClientScheme:
    """The client half for the scheme the aggregator runs, checked against the site's pins. A
    malicious aggregator cannot downgrade a site to the plain scheme unless the site allows it."""
    _known(session.scheme)
    receipt_digest_of(session.receipt_digest)
    if session.scheme == PLAIN and not pins.allow_plain:
        raise VerificationFailed("the aggregator asks for the plain scheme, which sends updates unprotected; this "
                                 "site does not allow it (allow_plain)")
    return _CLIENTS[session.scheme](session, identity, pins)


def server_scheme(name: str, options: ServerOptions) -> ServerScheme:
    _known(name)
    return _SERVERS[name](options)


def needs_keyholder(name: str) -> bool:
    """Whether the scheme's sums are revealed by a key-holder (for launchers and simulations)."""
    _known(name)
    return name in HE_SCHEMES


def session_of(protection: ServerScheme, roster: Roster) -> aggregator_pb2.Session:
    """The public parameters clients of `protection` need, for a federation of `roster`."""
    session = aggregator_pb2.Session(scheme=protection.name, chunk_values=protection.chunk_values,
                                     max_clients=len(roster), receipt_digest=RECEIPT_DIGEST)
    protection.describe(session)
    return session
