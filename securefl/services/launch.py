"""Assemble and start the services: what `securefl keyholder serve` and `securefl aggregator
serve` run, and what LocalFederation starts in separate processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..errors import InvalidInput
from ..he.keys import SecretContext
from ..he.presets import DEFAULT_PRESET, get_preset
from ..identity import Roster
from ..masking.server import SecAggSettings
from ..rounds.engine import RoundEngine
from ..rounds.scheme import RoundConfig
from ..rounds.store import KeyHolderStore, RoundStore
from ..schemes import ServerOptions, server_scheme, session_of
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


def serve_keyholder(*, roster: Roster, secret: SecretContext, min_clients: int, db: Path | str = ":memory:",
                    host: str = "127.0.0.1", port: int = 0) -> Running:
    service = KeyHolderService(secret, roster, KeyHolderStore(db), min_clients)
    server, bound = start_server(service.register, host, port)
    log.info("key-holder listening on %s:%d, context fingerprint %s", host, bound, secret.fingerprint.hex())
    return Running(server, bound)


def serve_aggregator(*, roster: Roster, scheme: str, defaults: RoundConfig, keyholder_address: str | None = None,
                     db: Path | str = ":memory:", implicit_rounds: bool = True, host: str = "127.0.0.1",
                     port: int = 0, secagg: SecAggSettings = SecAggSettings()) -> Running:
    keyholder = KeyHolderClient(keyholder_address) if keyholder_address else None
    protection = server_scheme(scheme, ServerOptions(roster, defaults.min_clients, keyholder, secagg))
    session = session_of(protection, roster)
    engine = RoundEngine(protection, RoundStore(db), roster, defaults, implicit_rounds=implicit_rounds)
    service = AggregatorService(engine, session)
    # Each client may hold one long-poll call (a stage or result wait) while it sends another:
    # the synchronous server needs a thread for each, or waiting clients starve the others.
    server, bound = start_server(service.register, host, port, workers=2 * len(roster) + 16)
    log.info("aggregator (%s) listening on %s:%d", protection.name, host, bound)
    return Running(server, bound)
