"""Assemble and start the services: what `securefl keyholder serve` and `securefl aggregator
serve` run, and what LocalFederation starts in separate processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..errors import InvalidInput, VerificationFailed
from ..federation import Federation
from ..he.aggregation import CkksScheme
from ..he.keys import SecretContext, fingerprint
from ..he.presets import DEFAULT_PRESET, get_preset
from ..identity import Identity
from ..masking.server import SecAggScheme, secagg_config
from ..pki import KEYHOLDER
from ..schemes import CKKS, PLAIN, SCHEMES, SECAGG, AggregationScheme, PlainScheme
from ..v1 import aggregator_pb2
from .aggregator import AggregatorService
from .keyholder import KeyHolderService
from .keyholder_client import KeyHolderClient
from .rounds import RoundConfig, RoundManager
from .rpc import start_server
from .store import KeyHolderStore, RoundStore
from ..tls import TlsConfig

log = logging.getLogger(__name__)


@dataclass
class Running:
    server: grpc.Server
    port: int

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait()


def load_or_create_secret(key_file: Path | None, passphrase: str | None, preset: str = DEFAULT_PRESET) -> SecretContext:
    """Keys in memory when no file is given; otherwise load the file, or create it encrypted."""
    if key_file is None:
        return SecretContext.generate(get_preset(preset))
    if not passphrase:
        raise InvalidInput("a key file needs a passphrase (set SECUREFL_KEY_PASSPHRASE)")
    if key_file.exists():
        return SecretContext.load(key_file, passphrase)
    secret = SecretContext.generate(get_preset(preset))
    secret.save(key_file, passphrase)
    return secret


def serve_keyholder(*, federation: Federation, secret: SecretContext, min_clients: int | None = None,
                    db: Path | str = ":memory:", host: str = "127.0.0.1", port: int = 0, tls: TlsConfig | None = None,
                    insecure: bool = False) -> Running:
    """`min_clients` defaults to the federation's `security.min_participants`."""
    min_clients = min_clients or federation.security.min_participants
    service = KeyHolderService(secret, federation, KeyHolderStore(db), min_clients)
    server, bound = start_server(service.register, host, port, tls=tls, insecure=insecure)
    log.info("key-holder listening on %s:%d, context fingerprint %s", host, bound, secret.fingerprint.hex())
    return Running(server, bound)


def aggregation_scheme(scheme: str, keyholder_address: str | None, federation: Federation, min_clients: int,
                       stage_timeout: float, tls: TlsConfig | None, insecure: bool) -> AggregationScheme:
    """The scheme's server half; its security parameters come from the federation file."""
    if scheme == PLAIN:
        return PlainScheme()
    if scheme == SECAGG:
        security = federation.security
        config = secagg_config(len(federation.roster), security.value_bound, security.max_weight,
                               security.dropout_fraction, security.corrupt_fraction)
        return SecAggScheme(config, federation.roster, max(min_clients, security.min_participants), stage_timeout)
    if scheme != CKKS:
        raise InvalidInput(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not keyholder_address:
        raise InvalidInput("the ckks scheme needs the key-holder's address")
    keyholder = KeyHolderClient(keyholder_address, tls, server=federation.party(KEYHOLDER), insecure=insecure)
    public = keyholder.public_context()
    if fingerprint(public.context) != public.fingerprint:
        raise VerificationFailed("the key-holder's public context does not match its fingerprint")
    return CkksScheme(public.context, public.preset, keyholder)


def serve_aggregator(*, federation: Federation, identity: Identity, scheme: str, defaults: RoundConfig,
                     keyholder_address: str | None = None, db: Path | str = ":memory:", implicit_rounds: bool = True,
                     host: str = "127.0.0.1", port: int = 0, stage_timeout: float = 30.0, tls: TlsConfig | None = None,
                     insecure: bool = False) -> Running:
    """`identity` signs acknowledgements: it must be the key federation.json pins for the
    aggregator, or clients would refuse every acknowledgement."""
    if not federation.aggregator.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the aggregator key pinned in the federation file")
    roster = federation.roster
    aggregation = aggregation_scheme(scheme, keyholder_address, federation, defaults.min_clients, stage_timeout, tls,
                                     insecure)
    session = aggregator_pb2.Session(
        scheme=aggregation.name, chunk_values=aggregation.chunk_values, max_abs_sum=aggregation.max_abs_sum,
        max_clients=len(roster),
    )
    if isinstance(aggregation, CkksScheme):
        session.he_context = aggregation.public_context
        session.he_fingerprint = fingerprint(aggregation.public_context)
        session.he_preset = aggregation.preset.name
    if isinstance(aggregation, SecAggScheme):
        session.secagg.CopyFrom(aggregation.config)
    rounds = RoundManager(aggregation, RoundStore(db), defaults, implicit_rounds=implicit_rounds)
    service = AggregatorService(aggregation, rounds, federation, session, identity)
    # Each client may hold one long-poll call (a stage or result wait) while it sends another:
    # the synchronous server needs a thread for each, or waiting clients starve the others.
    server, bound = start_server(service.register, host, port, workers=2 * len(roster) + 16, tls=tls, insecure=insecure)
    log.info("aggregator (%s) listening on %s:%d", aggregation.name, host, bound)
    return Running(server, bound)
