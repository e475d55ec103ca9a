"""LocalFederation: a key-holder, an aggregator and n enrolled clients on localhost; and
`local_psi`: both parties of a private set intersection in this process.

Each service runs in its own process (`python -m securefl ... serve`) and talks real gRPC over
real sockets, as in a deployment: enrolled in a federation of its own (a CA, certificates and
federation.json in the work directory) and over mutual TLS unless `insecure=True`. The clients
live in this process and may be used from threads. Used by the demo, the integration tests and
the benchmarks, and for prototyping."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .client import Client, ShardedClient, SimulatedDropout, connect
from .enrolment import FEDERATION_FILE, NewFederation, create_federation, ephemeral_credentials, issue_credentials, write_party
from .errors import ServiceUnavailable
from .federation import SecurityParameters
from .he.audit import AuditFile
from .he.keystore import RotationPolicy
from .identity import Identity
from .keyfiles import IDENTITY_PASSPHRASE_ENV, KEY_PASSPHRASE_ENV
from .lifecycle import PARENT_PID_ENV
from .pki import AGGREGATOR, KEYHOLDER, SITE, PartyName
from .psi import GroupPool, JoinerParty, PsiOutcome, ServerParty, encode_ids
from .schemes import DEFAULT_SCHEME, PLAIN, SCHEMES, needs_keyholder
from .services.psi import PsiService, join, tls_peer
from .services.rpc import channel, start_server
from .tls import TlsConfig

_START_TIMEOUT = 60.0
__all__ = ["LocalFederation", "SecAggSettings", "ServiceProcess", "SimulatedDropout", "start_keyholder",
           "local_psi", "local_psi_size", "local_psi_outcomes"]


@dataclass(frozen=True)
class SecAggSettings:
    """The schemes' knobs in a LocalFederation: the stage timeout (the aggregator's option) and
    the security parameters written into its federation file (secagg, bfv and ckks alike clip
    values to `value_bound` and weights to `max_weight`; `precision_bits` is bfv's)."""

    stage_timeout: float = 30.0
    value_bound: float = 10.0
    max_weight: float = 1000.0
    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.1
    precision_bits: int | None = None


class ServiceProcess:
    """One service in a child process; its port (and its metrics port, if it serves metrics)
    comes back through a ready file. The child arms its own parent-death signal
    (securefl.lifecycle); `env` adds environment variables, `cwd` is where it runs (default:
    here)."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.args = args
        self.workdir = workdir
        self.env = env or {}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.metrics_port: int | None = None

    def start(self, env: dict[str, str] | None = None) -> int:
        """Start the service (with `env` added to its environment this time); its port."""
        ready = self.workdir / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "securefl", *self.args, "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
            env={**os.environ, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid())},
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
                raise ServiceUnavailable(f"{self.name} did not start:\n{tail}")
            time.sleep(0.02)
        first, *rest = ready.read_text().splitlines()
        self.port = int(first)
        extra = dict(line.split("=", 1) for line in rest)
        self.metrics_port = int(extra["metrics_port"]) if "metrics_port" in extra else None
        return self.port

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the service drains), then SIGKILL after `timeout` seconds; the exit code."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process is not None else None


def start_keyholder(workdir: Path, enrolment: NewFederation, min_clients: int, env: dict[str, str], *,
                    scheme: str = DEFAULT_SCHEME, insecure: bool = False, preset: str | None = None,
                    rotate_every: int = RotationPolicy.rotate_every,
                    service_args: Sequence[str] = ()) -> tuple[ServiceProcess, str]:
    """The key-holder of `enrolment` as a service in a child process, from its files in `workdir`
    (`federation.json`, its identity and TLS files; `env` holds their passphrase, and the
    keystore's, a random one by default): the process and its address. Sites need nothing from
    it: they verify its key epochs against the key-holder key in federation.json."""
    transport = ["--insecure"] if insecure else ["--tls-cert", str(workdir / "keyholder.tls.crt"),
                                                 "--tls-key", str(workdir / "keyholder.tls.key")]
    process = ServiceProcess("keyholder", [
        "keyholder", "serve", "--port", "0", "--federation", str(workdir / FEDERATION_FILE), *transport,
        "--identity", str(workdir / "keyholder.identity.json"), "--scheme", scheme,
        *(["--preset", preset] if preset else []), "--min-clients", str(min_clients),
        "--rotate-every", str(rotate_every), "--keystore", str(workdir / "keyholder.keystore"),
        "--audit-log", str(workdir / "keyholder.audit.jsonl"), *service_args,
    ], workdir, {KEY_PASSPHRASE_ENV: secrets.token_urlsafe(24), **env})
    return process, f"127.0.0.1:{process.start()}"


class LocalFederation:
    """`with LocalFederation(4) as fed: fed.clients[0].aggregate(...)`.

    Defaults: the bfv scheme; every enrolled client is expected and required (`min_clients =
    n_clients`), no deadline. With `round_timeout`, a round also closes at its deadline once
    `min_clients` contributed, and fails with QuorumTimeout otherwise. HE schemes start a
    key-holder whose key epochs rotate every `rotate_every` rounds (and after a refused release).
    `insecure=True` runs plaintext gRPC (for measuring what TLS costs, or showing what it hides).
    `metrics=True` serves each service's Prometheus metrics on a free local port
    (`ServiceProcess.metrics_port`); `service_args` are passed to both services (e.g.
    `--log-format json`), `aggregator_args` to the aggregator only (e.g. `--max-inflight-mb 8`).
    `shards`: split every round by chunk range across that many aggregator processes (its
    clients are then `ShardedClient`s; `aggregator` is shard 0, the coordinator)."""

    def __init__(self, n_clients: int, scheme: str = DEFAULT_SCHEME, min_clients: int | None = None,
                 round_timeout: float | None = None, expected_clients: int | None = None,
                 workdir: str | Path | None = None, preset: str | None = None, implicit_rounds: bool = True,
                 secagg: SecAggSettings | None = None, insecure: bool = False, metrics: bool = False,
                 service_args: Sequence[str] = (), aggregator_args: Sequence[str] = (), shards: int = 1,
                 rotate_every: int = RotationPolicy.rotate_every) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
        if n_clients < 1:
            raise ValueError("a federation needs at least one client")
        self.n_clients = n_clients
        self.scheme = scheme
        self.min_clients = min_clients if min_clients is not None else n_clients
        self.expected_clients = expected_clients if expected_clients is not None else n_clients
        self.round_timeout = round_timeout or 0.0
        self.preset = preset
        self.rotate_every = rotate_every
        self.implicit_rounds = implicit_rounds
        self.insecure = insecure
        self.service_args = [*service_args, *(["--metrics-port", "0"] if metrics else [])]
        self.aggregator_args = list(aggregator_args)
        self.shards = shards
        self.aggregators: list[ServiceProcess] = []
        self.secagg = secagg or SecAggSettings(stage_timeout=round_timeout or SecAggSettings.stage_timeout)
        self._workdir_arg = workdir
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.enrolment: NewFederation | None = None
        self.identities: list[Identity] = []
        self.clients: list[Client] = []
        self.keyholder: ServiceProcess | None = None
        self.aggregator: ServiceProcess | None = None

    @property
    def aggregator_address(self) -> str:
        assert self.aggregator is not None
        return f"127.0.0.1:{self.aggregator.port}"

    @property
    def federation(self):
        """The Federation every party of this simulation pins (its federation.json)."""
        assert self.enrolment is not None
        return self.enrolment.federation

    @property
    def roster(self):
        return self.federation.roster

    @property
    def keyholder_address(self) -> str:
        assert self.keyholder is not None
        return f"127.0.0.1:{self.keyholder.port}"

    def audit_log(self) -> list[dict]:
        """The key-holder's audit entries, oldest first."""
        return AuditFile(self.workdir / "keyholder.audit.jsonl").entries()

    def __enter__(self) -> LocalFederation:
        if self._workdir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="securefl-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = Path(self._workdir_arg)
            self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _enrol(self) -> dict[str, str]:
        """Enrol everyone; write what the services load; returns their environment."""
        s = self.secagg
        security = SecurityParameters(s.dropout_fraction, s.corrupt_fraction, s.value_bound, s.max_weight,
                                      min_participants=max(2, self.min_clients), precision_bits=s.precision_bits)
        self.enrolment = create_federation([f"site-{i + 1}" for i in range(self.n_clients)], name="local",
                                           keyholder_id="keyholder" if needs_keyholder(self.scheme) else None,
                                           security=security)
        self.identities = [p.identity for p in self.enrolment.parties if p.name.role == SITE]
        passphrase = secrets.token_urlsafe(24)
        for party in self.enrolment.parties:
            if party.name.role in (AGGREGATOR, KEYHOLDER):
                write_party(self.workdir, party, passphrase)
        self.federation.save(self.workdir / FEDERATION_FILE)
        return {IDENTITY_PASSPHRASE_ENV: passphrase}

    def _transport_args(self, party_id: str) -> list[str]:
        if self.insecure:
            return ["--insecure"]
        return ["--tls-cert", str(self.workdir / f"{party_id}.tls.crt"), "--tls-key", str(self.workdir / f"{party_id}.tls.key")]

    def _start(self) -> None:
        env = self._enrol()
        federation_args = ["--federation", str(self.workdir / FEDERATION_FILE)]
        keyholder_args: list[str] = []
        if needs_keyholder(self.scheme):
            assert self.enrolment is not None
            self.keyholder, address = start_keyholder(
                self.workdir, self.enrolment, self.min_clients, env, scheme=self.scheme, insecure=self.insecure,
                preset=self.preset, rotate_every=self.rotate_every, service_args=self.service_args)
            keyholder_args = ["--keyholder", address]
        for index in range(self.shards):
            name = "aggregator" if self.shards == 1 else f"aggregator-{index}"
            shard_args = [] if self.shards == 1 else ["--shard", f"{index}/{self.shards}"]
            if index:
                shard_args += ["--coordinator", f"127.0.0.1:{self.aggregators[0].port}"]
            aggregator = ServiceProcess(name, [
                "aggregator", "serve", "--port", "0", *federation_args, *self._transport_args("aggregator"),
                "--identity", str(self.workdir / "aggregator.identity.json"), "--scheme", self.scheme,
                "--min-clients", str(self.min_clients), "--expected-clients", str(self.expected_clients),
                "--round-timeout", str(self.round_timeout), "--db", str(self.workdir / f"{name}.db"),
                "--implicit-rounds" if self.implicit_rounds else "--no-implicit-rounds", *keyholder_args,
                "--stage-timeout", str(self.secagg.stage_timeout), *self.service_args, *self.aggregator_args,
                *shard_args,
            ], self.workdir, env)
            aggregator.start()
            self.aggregators.append(aggregator)
        self.aggregator = self.aggregators[0]
        self.clients = [self.connect(identity) for identity in self.identities]

    def credentials(self, role: str, party_id: str) -> TlsConfig | None:
        """TLS material for any party name, enrolled or not, issued by this federation's CA (a
        stranger's certificate, in tests); None when insecure."""
        if self.insecure:
            return None
        assert self.enrolment is not None
        name = PartyName(role, party_id)
        enrolled = next((p for p in self.enrolment.parties if p.name == name), None)
        if enrolled is not None:
            return enrolled.tls(self.enrolment.ca)
        return issue_credentials(self.enrolment.ca, self.enrolment.ca_key, name)

    def connect(self, identity: Identity, tls: TlsConfig | None = None) -> Client | ShardedClient:
        """Another client of this federation's aggregators (e.g. an unenrolled one, in tests),
        with the certificate of the site its identity names unless `tls` is given."""
        addresses = [f"127.0.0.1:{aggregator.port}" for aggregator in self.aggregators]
        return connect(addresses, identity=identity, federation=self.federation,
                       tls=tls or self.credentials(SITE, identity.client_id), insecure=self.insecure,
                       allow_plain=self.scheme == PLAIN)

    def restart_aggregator(self, *, crash: bool = False, env: dict[str, str] | None = None) -> None:
        """Stop the aggregator process (SIGTERM, or SIGKILL with `crash`) and start it again on
        the same port and store, with `env` added to its environment."""
        assert self.aggregator is not None
        port = self.aggregator.port
        if crash:
            self.aggregator.kill()
        else:
            self.aggregator.stop()
        self.aggregator.args[self.aggregator.args.index("--port") + 1] = str(port)
        self.aggregator.start(env)

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        for service in (*reversed(self.aggregators), self.keyholder):
            if service is not None:
                service.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def local_psi(ids_a: Sequence, ids_b: Sequence, workers: int | None = None) -> tuple[list[int], list[int]]:
    """Align two ID lists: returns (indices_a, indices_b) of the intersection, in the same order."""
    outcome_a, outcome_b = local_psi_outcomes(ids_a, ids_b, workers=workers)
    return outcome_a.indices, outcome_b.indices


def local_psi_size(ids_a: Sequence, ids_b: Sequence, workers: int | None = None) -> int:
    """Only the size of the intersection (cardinality mode)."""
    outcome_a, outcome_b = local_psi_outcomes(ids_a, ids_b, cardinality_only=True, workers=workers)
    if outcome_a.cardinality != outcome_b.cardinality:
        raise RuntimeError("the two parties disagree on the intersection size")
    return outcome_b.cardinality


def local_psi_outcomes(ids_a: Sequence, ids_b: Sequence, cardinality_only: bool = False,
                       workers: int | None = None) -> tuple[PsiOutcome, PsiOutcome]:
    """Both PSI parties in this process, over real gRPC on localhost with mutual TLS under a
    throwaway CA (the deployed path): party A serves only party B's certificate. Group
    operations run on `workers` threads (default: one per core); no worker processes, so this
    works from any script, `python -`, a notebook or a thread."""
    encoded_a, encoded_b = encode_ids(list(ids_a)), encode_ids(list(ids_b))
    name_a, name_b = PartyName(SITE, "party-a"), PartyName(SITE, "party-b")
    tls_a, tls_b = ephemeral_credentials(name_a, name_b)
    outcomes: list[PsiOutcome] = []
    with GroupPool(workers) as pool:
        party_a = ServerParty(encoded_a, pool, expected_peer=name_b.party_id, max_peer_set=len(encoded_b))
        server, port = start_server(PsiService(party_a, tls_peer, on_finish=outcomes.append).register, "127.0.0.1", 0,
                                    workers=4, tls=tls_a)
        try:
            with channel(f"127.0.0.1:{port}", tls_b, server=name_a) as psi_channel:
                party_b = JoinerParty(encoded_b, pool, max_peer_set=len(encoded_a))
                outcome_b = join(psi_channel, party_b, cardinality_only=cardinality_only)
        finally:
            server.stop(0)
    return outcomes[0], outcome_b
