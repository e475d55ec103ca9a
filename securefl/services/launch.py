"""Assemble and start the services: what `securefl keyholder serve` and `securefl aggregator
serve` run, and what LocalFederation starts in separate processes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..errors import InvalidInput
from ..federation import Federation
from ..he.keys import SecretContext
from ..he.presets import DEFAULT_PRESET, get_preset
from ..identity import Identity
from ..pki import AGGREGATOR, KEYHOLDER
from ..rounds.admission import MIB, MemoryBudget
from ..rounds.engine import RoundEngine
from ..rounds.scheme import RoundConfig
from ..rounds.sharding import Coordinator, ShardRole
from ..rounds.store import KeyHolderStore, RoundStore
from ..schemes import ServerOptions, server_scheme
from ..tls import TlsConfig
from ..v1 import aggregator_pb2
from .aggregator import AggregatorService
from .coordinator import CoordinatorClient, CoordinatorService
from .keyholder import KeyHolderService
from .keyholder_client import KeyHolderClient
from .rpc import start_server

log = logging.getLogger(__name__)

# A stream buffers at most this much ahead of its handler (no BDP probing, which grows windows
# to whole submissions): a submission waiting for memory (rounds/admission.py) then holds
# 256 KiB inside gRPC, not megabytes, and a thousand waiting clients stay cheap.
FLOW_CONTROL_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 256 * 1024)]


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
                     insecure: bool = False, max_inflight_mb: int | None = None, checkpoint_seconds: float = 60.0,
                     shard: tuple[int, int] | None = None, coordinator_address: str | None = None) -> Running:
    """`identity` signs acknowledgements: it must be the key federation.json pins for the
    aggregator, or clients would refuse every acknowledgement. The scheme's security
    parameters come from the federation file. `shard` (index, count): serve one chunk range of
    rounds split across `count` aggregators (docs/scaling.md); shard 0 also hosts their
    coordinator, the others reach it at `coordinator_address`."""
    if not federation.aggregator.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the aggregator key pinned in the federation file")
    roster = federation.roster
    keyholder = None
    if keyholder_address:
        keyholder = KeyHolderClient(keyholder_address, tls, server=federation.party(KEYHOLDER), insecure=insecure)
    protection = server_scheme(scheme, ServerOptions(federation, defaults.min_clients, keyholder, stage_timeout))
    session = aggregator_pb2.Session(scheme=protection.name, chunk_values=protection.chunk_values, max_clients=len(roster))
    protection.describe(session)
    budget = MemoryBudget(max_inflight_mb * MIB if max_inflight_mb else None, on_idle=tune_allocator())
    link = _ShardLink(federation, tls, insecure)
    services, role = link.role(shard, coordinator_address, defaults)
    engine = RoundEngine(protection, RoundStore(db), roster, defaults, implicit_rounds=implicit_rounds, budget=budget,
                         checkpoint_seconds=checkpoint_seconds, shard=role)
    services.append(AggregatorService(engine, federation, session, identity))
    # Each client may hold one long-poll call (a stage or result wait) while it sends another:
    # the synchronous server needs a thread for each, or waiting clients starve the others; a
    # coordinator also holds one call per client and shard.
    shards = shard[1] if shard else 1
    server, bound = start_server(lambda server: [service.register(server) for service in services], host, port,
                                 workers=(1 + shards) * len(roster) + 16, tls=tls, insecure=insecure,
                                 options=FLOW_CONTROL_OPTIONS)
    log.info("aggregator (%s) listening on %s:%d", protection.name, host, bound)
    return Running(server, bound)


@dataclass
class _ShardLink:
    """How shards reach their coordinator: over the aggregator's own mutual TLS, each shard
    presenting the aggregator's certificate (they are one operator's processes)."""

    federation: Federation
    tls: TlsConfig | None
    insecure: bool

    def role(self, shard: tuple[int, int] | None, coordinator_address: str | None,
             defaults: RoundConfig) -> tuple[list, ShardRole | None]:
        """The extra services and the engine's role of a shard: shard 0 runs the coordinator in
        process and serves it to the other shards."""
        if shard is None:
            return [], None
        index, count = shard
        if not 0 <= index < count:
            raise InvalidInput(f"shard {index} of {count} does not exist")
        if index == 0:
            coordinator = Coordinator(count, defaults)
            return [CoordinatorService(coordinator, self.federation)], ShardRole(0, count, coordinator)
        if coordinator_address is None:
            raise InvalidInput("shards other than 0 need the coordinator's address (shard 0's)")
        client = CoordinatorClient(coordinator_address, self.tls, server=self.federation.party(AGGREGATOR),
                                   insecure=self.insecure)
        return [], ShardRole(index, count, client)


def tune_allocator() -> Callable[[], None] | None:
    """Make glibc's allocator suit a server that receives megabytes per stream on many threads
    (Linux/glibc; elsewhere nothing). Two arenas instead of 8 per core: with one arena per
    gRPC thread, freed chunk buffers stay cached in every arena and the process keeps several
    times its working set. Returns `malloc_trim`, which hands freed memory back to the
    operating system; the engine calls it whenever no submission is held. (Forcing every buffer
    through mmap returns memory at once too, but doubled the aggregator's CPU per byte.)"""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return None
    return lambda: libc.malloc_trim(0)
