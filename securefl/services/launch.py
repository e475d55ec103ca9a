"""Assemble, start and stop the services from their settings: what `securefl keyholder serve`,
`securefl aggregator serve` and `securefl psi serve` run (LocalFederation starts them as
processes).

Each server reports NOT_SERVING on the standard health service until it is ready, and
`Running.shutdown` drains it: NOT_SERVING, no new round or call, running calls finish within the
grace period (then they are cancelled), the stores are closed (SQLite checkpoints its log)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from ..errors import InvalidInput, ServiceUnavailable
from ..federation import Federation
from ..he.audit import AuditFile
from ..he.epochs import EpochSettings
from ..he.keystore import KeyStore, RotationPolicy
from ..he.pool import DecryptionPool, Decryptor
from ..he.release import KeyHolderCore
from ..identity import Identity
from ..pki import AGGREGATOR, KEYHOLDER
from ..psi import GroupPool, PsiOutcome, ServerParty, read_ids
from ..rounds.admission import MIB, MemoryBudget
from ..rounds.engine import RoundEngine
from ..rounds.limits import RoundLimits
from ..rounds.scheme import RoundConfig
from ..rounds.sharding import Coordinator, ShardRole
from ..rounds.store import RoundStore
from ..schemes import ServerOptions, needs_keyholder, server_scheme, session_of
from ..telemetry import NO_METRICS, NO_RELEASE_METRICS
from ..tls import TlsConfig
from ..v1 import aggregator_pb2, keyholder_pb2, psi_pb2
from .aggregator import AggregatorService
from .coordinator import CoordinatorClient, CoordinatorService
from .health import Health, service_name
from .keyholder import KeyHolderService
from .keyholder_client import KeyHolderClient
from .metrics import AggregatorMetrics, KeyHolderMetrics, MetricsEndpoint, serve_metrics
from .psi import PsiService, tls_peer
from .rpc import start_server
from .settings import KEY_PASSPHRASE_ENV, AggregatorSettings, KeyHolderSettings, PsiSettings, ServiceSettings

log = logging.getLogger(__name__)

# A stream buffers at most this much ahead of its handler (no BDP probing, which grows windows
# to whole submissions): a submission waiting for memory (rounds/admission.py) then holds
# 256 KiB inside gRPC, not megabytes, and a thousand waiting clients stay cheap.
FLOW_CONTROL_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 256 * 1024)]


@dataclass
class Running:
    """A started server. A shutdown runs `drain_hooks` (stop taking new work), then waits for
    each of `idle_hooks(seconds left)` (running work finished), then stops the server (calls
    still running are cancelled) and runs `close_hooks(seconds left)`. The health service
    answers NOT_SERVING throughout, for as long as the server answers at all."""

    name: str
    server: grpc.Server
    port: int
    health: Health
    metrics: MetricsEndpoint | None = None
    drain_hooks: list[Callable[[], None]] = field(default_factory=list)
    idle_hooks: list[Callable[[float], bool]] = field(default_factory=list)
    close_hooks: list[Callable[[float], None]] = field(default_factory=list)

    def ready(self) -> None:
        self.health.serving()
        log.info("%s serving on port %d", self.name, self.port)

    def shutdown(self, grace: float) -> None:
        deadline = time.monotonic() + grace

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.health.draining()
        for hook in self.drain_hooks:
            hook()
        finished = all([hook(left()) for hook in self.idle_hooks])
        self.server.stop(left()).wait()
        if not finished or (grace and not left()):
            log.warning("%s: work still running after the %g s grace period was cancelled", self.name, grace)
        for hook in self.close_hooks:
            hook(left())
        if self.metrics is not None:
            self.metrics.close()
        log.info("%s stopped", self.name)


def transport_tls(settings: ServiceSettings, federation_ca: bytes | None = None) -> TlsConfig | None:
    """The TLS material of the settings (the CA defaults to the federation's); None only when
    the settings say insecure."""
    if getattr(settings, "insecure", False):
        return None
    if settings.tls_ca is None and federation_ca is None:
        raise InvalidInput("give the CA to trust with --tls-ca (tls_ca)")
    return TlsConfig.from_files(settings.tls_cert, settings.tls_key,
                                settings.tls_ca if settings.tls_ca is not None else federation_ca,
                                passphrase=settings.passphrase())


def _metrics_endpoint(settings: AggregatorSettings | KeyHolderSettings, registry) -> MetricsEndpoint | None:
    if settings.metrics_port is None:
        return None
    try:
        endpoint = serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                                 f"{exc.strerror}") from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, endpoint.port)
    return endpoint


def serve_keyholder(settings: KeyHolderSettings) -> Running:
    """Start the key-holder; call `ready()` on the result once the caller is ready to serve. Its
    identity signs the key epochs: it must be the key federation.json pins for the key-holder, or
    sites would refuse every epoch. The epochs' parameters come from the federation file."""
    federation = Federation.load(settings.federation)
    tls = transport_tls(settings, federation.ca_certificate)
    identity = Identity.load(settings.identity, settings.passphrase())
    if federation.keyholder is None or not federation.keyholder.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the key-holder key pinned in the federation file")
    passphrase = settings.passphrase("key_passphrase")
    if not passphrase:
        raise InvalidInput(f"the keystore {settings.keystore} needs a passphrase: set {KEY_PASSPHRASE_ENV}")
    epochs = EpochSettings.for_federation(federation, settings.scheme.value,
                                          settings.preset.value if settings.preset else None, settings.precision_bits)
    metrics = KeyHolderMetrics() if settings.metrics_port is not None else None
    endpoint = _metrics_endpoint(settings, metrics.registry) if metrics else None
    keystore = decryption = None
    try:
        audit = AuditFile(settings.audit_log)
        keystore = KeyStore.open_or_create(settings.keystore, passphrase, identity, epochs,
                                           RotationPolicy(rotate_every=settings.rotate_every))
        decryption = DecryptionPool(settings.decryption_workers) if settings.decryption_workers else None
        core = KeyHolderCore(keystore, federation.roster, settings.min_clients or federation.security.min_participants,
                             audit, metrics or NO_RELEASE_METRICS, Decryptor(decryption))
        service = KeyHolderService(core, federation, audit, metrics or NO_RELEASE_METRICS)
        health = Health(service_name(keyholder_pb2, "KeyHolder"))
        server, bound = start_server(service.register, settings.host, settings.port, tls=tls,
                                     insecure=settings.insecure, health=health)
    except BaseException:
        if keystore is not None:
            keystore.close()
        if decryption is not None:
            decryption.shutdown()
        if endpoint is not None:
            endpoint.close()
        raise
    epoch = keystore.current.public
    log.info("key-holder: %s epoch %d (preset %s) signed by %s, rotating every %d rounds", epoch.scheme, epoch.epoch,
             epoch.preset, identity.client_id, settings.rotate_every)

    def close(_: float) -> None:
        keystore.close()
        if decryption is not None:
            decryption.shutdown()

    return Running("key-holder", server, bound, health, endpoint, close_hooks=[close])


def serve_aggregator(settings: AggregatorSettings) -> Running:
    """Start the aggregator. Its identity signs acknowledgements: it must be the key
    federation.json pins for the aggregator, or clients would refuse every acknowledgement.
    The scheme's security parameters come from the federation file. With `settings.shard`
    (INDEX/COUNT) it sums one chunk range of rounds split across COUNT aggregators
    (docs/scaling.md); shard 0 also hosts their coordinator, the others reach it at
    `settings.coordinator`."""
    federation = Federation.load(settings.federation)
    tls = transport_tls(settings, federation.ca_certificate)
    identity = Identity.load(settings.identity, settings.passphrase())
    if not federation.aggregator.matches(identity):
        raise InvalidInput(f"identity {identity.client_id!r} is not the aggregator key pinned in the federation file")
    roster = federation.roster
    keyholder = None
    if settings.keyholder and needs_keyholder(settings.scheme.value):
        keyholder = KeyHolderClient(settings.keyholder, tls, server=federation.party(KEYHOLDER),
                                    insecure=settings.insecure)
    protection = server_scheme(settings.scheme.value, ServerOptions(federation, settings.min_clients, keyholder,
                                                                    settings.stage_timeout))
    session = session_of(protection, roster)
    defaults = RoundConfig(settings.min_clients, settings.expected_clients or len(roster), settings.round_timeout,
                           settings.vector_length)
    limits = RoundLimits(settings.max_open_rounds, settings.max_open_rounds_per_site, settings.round_retention)
    metrics = AggregatorMetrics() if settings.metrics_port is not None else None
    budget = MemoryBudget(settings.max_inflight_mb * MIB if settings.max_inflight_mb else None,
                          on_idle=tune_allocator())
    services, role = _ShardLink(federation, tls, settings.insecure).role(settings.shard, settings.coordinator, defaults)
    store = RoundStore(settings.db)
    engine = RoundEngine(protection, store, roster, defaults, implicit_rounds=settings.implicit_rounds, limits=limits,
                         metrics=metrics or NO_METRICS, budget=budget, checkpoint_seconds=settings.checkpoint_seconds,
                         shard=role)

    def close(seconds_left: float) -> None:
        if not engine.stop(seconds_left):
            log.warning("a round was still being revealed at exit; it is revealed again at the next start")
        store.close()

    services.append(AggregatorService(engine, federation, session, identity, settings.max_waits_per_site,
                                      settings.max_streams_per_site))
    # Every party at its caps (long polls and streams) still leaves threads for short calls; a
    # coordinator also holds one call per client and shard.
    parties = len(roster) + len(federation.operators)
    shards = settings.shard[1] if settings.shard else 1
    workers = parties * (settings.max_waits_per_site + settings.max_streams_per_site + shards - 1) + 16
    health = Health(service_name(aggregator_pb2, "Aggregator"))
    try:
        endpoint = _metrics_endpoint(settings, metrics.registry) if metrics else None
        try:
            server, bound = start_server(lambda server: [service.register(server) for service in services],
                                         settings.host, settings.port, workers=workers, tls=tls,
                                         insecure=settings.insecure, health=health, options=FLOW_CONTROL_OPTIONS)
        except BaseException:
            if endpoint is not None:
                endpoint.close()
            raise
    except BaseException:
        close(0.0)
        raise
    log.info("aggregator (%s) on %s:%d", protection.name, settings.host, bound)
    return Running("aggregator", server, bound, health, endpoint, drain_hooks=[engine.drain],
                   idle_hooks=[engine.wait_idle], close_hooks=[close])


def serve_psi(settings: PsiSettings, on_finish: Callable[[PsiOutcome], None]) -> Running:
    """Start PSI party A for the one peer of the settings; `on_finish` gets each completed
    session's outcome."""
    own = read_ids(settings.ids, settings.column)
    tls = transport_tls(settings)
    pool = GroupPool()
    party = ServerParty(own, pool, expected_peer=settings.peer, max_peer_set=settings.max_peer_set,
                        session_timeout=settings.session_timeout)
    health = Health(service_name(psi_pb2, "Psi"))
    try:
        server, bound = start_server(PsiService(party, tls_peer, on_finish=on_finish).register, settings.host,
                                     settings.port, workers=4, tls=tls, health=health)
    except BaseException:
        pool.shutdown()
        raise
    log.info("PSI party A: %d IDs for %s", len(own), settings.peer)
    return Running("PSI party A", server, bound, health, close_hooks=[lambda _: pool.shutdown()])


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
        if index == 0:
            coordinator = Coordinator(count, defaults)
            return [CoordinatorService(coordinator, self.federation)], ShardRole(0, count, coordinator)
        if coordinator_address is None:
            raise InvalidInput("shards other than 0 need the coordinator's address (shard 0's)")
        client = CoordinatorClient(coordinator_address, self.tls, server=self.federation.party(AGGREGATOR),
                                   insecure=self.insecure)
        return [], ShardRole(index, count, client)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
ARENA_BUFFERS_BYTES = 32 * MIB  # buffers up to this size come from the arenas, not fresh mappings
KEPT_FREE_BYTES = 64 * MIB  # freed memory an arena keeps during a burst, until malloc_trim


def tune_allocator() -> Callable[[], None] | None:
    """Make glibc's allocator suit a server that receives megabytes per stream on many threads
    (Linux/glibc; elsewhere nothing). Two arenas instead of 8 per core: with one arena per
    gRPC thread, freed chunk buffers stay cached in every arena and the process keeps several
    times its working set. Message buffers come from the arenas and freed ones are reused
    during a burst: by default each 1 MiB message had a fresh mapping whose pages the kernel
    faulted in and zeroed, 12 % of the aggregator's CPU while ingesting (8 SecAgg+ clients x 16
    MB at once: 503-555 MB/s before, 582-595 after; aggregator CPU per round 0.68 -> 0.53-0.62
    s; 100 plain clients at once peak at 283 MiB instead of 264). Returns `malloc_trim`, which
    hands freed memory back to the operating system; the engine calls it whenever no
    submission is held. (Forcing every buffer through mmap returns memory at once too, but
    doubled the aggregator's CPU per byte.)"""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, ARENA_BUFFERS_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES)
    except (OSError, AttributeError):
        return None
    return lambda: libc.malloc_trim(0)
