"""Assemble and start the services: what `securefl keyholder serve` and `securefl aggregator
serve` run, and what LocalFederation starts in separate processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..errors import InvalidInput
from ..federation import Federation
from ..he.keys import SecretContext
from ..he.presets import DEFAULT_PRESET, get_preset
from ..identity import Identity
from ..pki import KEYHOLDER
from ..rounds.engine import RoundEngine
from ..rounds.scheme import RoundConfig
from ..rounds.store import KeyHolderStore, RoundStore
from ..schemes import ServerOptions, server_scheme, session_of
from ..tls import TlsConfig
from .aggregator import AggregatorService
from .keyholder import KeyHolderService
from .keyholder_client import KeyHolderClient
from .rpc import start_server

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


def serve_aggregator(*, federation: Federation, identity: Identity, scheme: str, defaults: RoundConfig,
                     keyholder_address: str | None = None, db: Path | str = ":memory:", implicit_rounds: bool = True,
                     host: str = "127.0.0.1", port: int = 0, stage_timeout: float = 30.0, tls: TlsConfig | None = None,
                     insecure: bool = False) -> Running:
    """`identity` signs acknowledgements: it must be the key federation.json pins for the
    aggregator, or clients would refuse every acknowledgement. The scheme's security
    parameters come from the federation file."""
    if not federation.aggregator.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the aggregator key pinned in the federation file")
    roster = federation.roster
    keyholder = None
    if keyholder_address:
        keyholder = KeyHolderClient(keyholder_address, tls, server=federation.party(KEYHOLDER), insecure=insecure)
    protection = server_scheme(scheme, ServerOptions(federation, defaults.min_clients, keyholder, stage_timeout))
    session = session_of(protection, roster)
    engine = RoundEngine(protection, RoundStore(db), roster, defaults, implicit_rounds=implicit_rounds)
    service = AggregatorService(engine, federation, session, identity)
    # Each client may hold one long-poll call (a stage or result wait) while it sends another:
    # the synchronous server needs a thread for each, or waiting clients starve the others.
    server, bound = start_server(service.register, host, port, workers=2 * len(roster) + 16, tls=tls, insecure=insecure)
    log.info("aggregator (%s) listening on %s:%d", protection.name, host, bound)
    return Running(server, bound)
