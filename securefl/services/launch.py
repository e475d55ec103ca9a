"""Assemble and start the services: what `securefl keyholder serve` and `securefl aggregator
serve` run, and what LocalFederation starts in separate processes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ..errors import InvalidInput
from ..federation import Federation
from ..he.audit import AuditFile
from ..he.epochs import EpochSettings
from ..he.keystore import KeyStore, RotationPolicy
from ..he.release import KeyHolderCore
from ..identity import Identity
from ..pki import KEYHOLDER
from ..rounds.engine import RoundEngine
from ..rounds.scheme import RoundConfig
from ..rounds.store import RoundStore
from ..schemes import ServerOptions, needs_keyholder, server_scheme
from ..tls import TlsConfig
from ..v1 import aggregator_pb2
from .aggregator import AggregatorService
from .keyholder import KeyHolderService
from .keyholder_client import KeyHolderClient
from .rpc import start_server

log = logging.getLogger(__name__)


@dataclass
class Running:
    server: grpc.Server
    port: int
    on_stop: list[Callable[[], None]] = field(default_factory=list)  # after the server stopped

    def stop(self, grace: float = 1.0) -> None:
        self.server.stop(grace).wait()
        for close in self.on_stop:
            close()


@dataclass(frozen=True)
class KeyHolderConfig:
    """What the key-holder's operator chooses; the rest comes from federation.json."""

    keystore: Path
    passphrase: str
    audit_log: Path
    scheme: str
    preset: str | None = None
    precision_bits: int | None = None  # None: the federation's security.precision_bits, else the default
    rotate_every: int = RotationPolicy.rotate_every
    min_clients: int | None = None  # None: the federation's security.min_participants


def serve_keyholder(*, federation: Federation, identity: Identity, config: KeyHolderConfig, host: str = "127.0.0.1",
                    port: int = 0, tls: TlsConfig | None = None, insecure: bool = False) -> Running:
    """`identity` signs the key epochs: it must be the key federation.json pins for the
    key-holder, or clients would refuse every epoch."""
    if federation.keyholder is None or not federation.keyholder.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the key-holder key pinned in the federation file")
    settings = EpochSettings.for_federation(federation, config.scheme, config.preset, config.precision_bits)
    keystore = KeyStore.open_or_create(config.keystore, config.passphrase, identity, settings,
                                       RotationPolicy(rotate_every=config.rotate_every))
    try:
        audit = AuditFile(config.audit_log)
        core = KeyHolderCore(keystore, federation.roster, config.min_clients or federation.security.min_participants,
                             audit)
        server, bound = start_server(KeyHolderService(core, federation, audit).register, host, port, tls=tls,
                                     insecure=insecure)
    except BaseException:
        keystore.close()
        raise
    epoch = keystore.current.public
    log.info("key-holder listening on %s:%d: %s epoch %d (preset %s), rotating every %d rounds", host, bound,
             epoch.scheme, epoch.epoch, epoch.preset, config.rotate_every)
    return Running(server, bound, [keystore.close])


def serve_aggregator(*, federation: Federation, identity: Identity, scheme: str, defaults: RoundConfig,
                     keyholder_address: str | None = None, db: Path | str = ":memory:", implicit_rounds: bool = True,
                     host: str = "127.0.0.1", port: int = 0, stage_timeout: float = 30.0, tls: TlsConfig | None = None,
                     insecure: bool = False) -> Running:
    """`identity` signs acknowledgements: it must be the key federation.json pins for the
    aggregator, or clients would refuse every acknowledgement. The scheme's security
    parameters come from the federation file (and, for HE schemes, the key-holder's epochs)."""
    if not federation.aggregator.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the aggregator key pinned in the federation file")
    roster = federation.roster
    keyholder = None
    if keyholder_address and needs_keyholder(scheme):
        keyholder = KeyHolderClient(keyholder_address, tls, server=federation.party(KEYHOLDER), insecure=insecure)
    protection = server_scheme(scheme, ServerOptions(federation, defaults.min_clients, keyholder, stage_timeout))
    session = aggregator_pb2.Session(scheme=protection.name, chunk_values=protection.chunk_values, max_clients=len(roster))
    protection.describe(session)
    engine = RoundEngine(protection, RoundStore(db), roster, defaults, implicit_rounds=implicit_rounds)
    service = AggregatorService(engine, federation, session, identity)
    # Each client may hold one long-poll call (a stage or result wait) while it sends another:
    # the synchronous server needs a thread for each, or waiting clients starve the others.
    server, bound = start_server(service.register, host, port, workers=2 * len(roster) + 16, tls=tls, insecure=insecure)
    log.info("aggregator (%s) listening on %s:%d", protection.name, host, bound)
    return Running(server, bound)
