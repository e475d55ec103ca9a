"""LocalFederation: a key-holder, an aggregator and n enrolled clients on localhost.

Each service runs in its own process (`python -m securefl ... serve`) and talks real gRPC over
real sockets, as in a deployment; the clients live in this process and may be used from
threads. Used by the demo, the integration tests and the benchmarks, and for prototyping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import Client, SimulatedDropout, connect
from .errors import ServiceUnavailable
from .identity import Identity, Roster
from .schemes import CKKS, PLAIN, SCHEMES, SECAGG
from .masking.server import SecAggSettings
from .services.keyholder_client import KeyHolderClient

_START_TIMEOUT = 60.0
__all__ = ["LocalFederation", "SecAggSettings", "ServiceProcess", "SimulatedDropout", "enrol", "start_keyholder"]


def _die_with_parent() -> None:
    """Linux: a service child gets SIGTERM when the process that started it dies, so a crashed
    test or demo leaves no stray servers behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServiceProcess:
    """One service in a child process; its port comes back through a ready file."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> int:
        ready = self.workdir / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "securefl", *self.args, "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
                raise ServiceUnavailable(f"{self.name} did not start:\n{tail}")
            time.sleep(0.02)
        self.port = int(ready.read_text())
        return self.port

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def enrol(directory: Path, client_ids: list[str]) -> list[Identity]:
    """An enrolment on one machine (simulations, tests, benchmarks): an identity per client id,
    saved in `directory` as `ID.identity.json`, and their `roster.json`."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    identities = [Identity.generate(client_id) for client_id in client_ids]
    for identity in identities:
        identity.save(directory / f"{identity.client_id}.identity.json")
    Roster.of(identities).save(directory / "roster.json")
    return identities


def start_keyholder(workdir: Path, roster: Path, min_clients: int,
                    preset: str | None = None) -> tuple[ServiceProcess, str, bytes]:
    """A key-holder service in a child process: the process, its address and the fingerprint a
    client pins (read here, standing in for the out-of-band channel)."""
    preset_args = ["--preset", preset] if preset else []
    process = ServiceProcess("keyholder", ["keyholder", "serve", "--port", "0", "--roster", str(roster),
                                           "--min-clients", str(min_clients), "--db", str(workdir / "keyholder.db"),
                                           *preset_args], workdir)
    address = f"127.0.0.1:{process.start()}"
    keyholder = KeyHolderClient(address)
    try:
        return process, address, keyholder.public_context().fingerprint
    finally:
        keyholder.close()


class LocalFederation:
    """`with LocalFederation(4) as fed: fed.clients[0].aggregate(...)`.

    Defaults: every enrolled client is expected and required (`min_clients = n_clients`), no
    deadline. With `round_timeout`, a round also closes at its deadline once `min_clients`
    contributed, and fails with QuorumTimeout otherwise."""

    def __init__(self, n_clients: int, scheme: str = CKKS, min_clients: int | None = None,
                 round_timeout: float | None = None, expected_clients: int | None = None,
                 workdir: str | Path | None = None, preset: str | None = None, implicit_rounds: bool = True,
                 secagg: SecAggSettings | None = None) -> None:
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
        self.implicit_rounds = implicit_rounds
        self.secagg = secagg or SecAggSettings(stage_timeout=round_timeout or SecAggSettings.stage_timeout)
        self.roster: Roster | None = None
        self._workdir_arg = workdir
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.identities: list[Identity] = []
        self.clients: list[Client] = []
        self.keyholder: ServiceProcess | None = None
        self.aggregator: ServiceProcess | None = None
        self.keyholder_fingerprint: bytes | None = None

    @property
    def aggregator_address(self) -> str:
        assert self.aggregator is not None
        return f"127.0.0.1:{self.aggregator.port}"

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

    def _start(self) -> None:
        self.identities = [Identity.generate(f"site-{i + 1}") for i in range(self.n_clients)]
        roster_path = self.workdir / "roster.json"
        self.roster = Roster.of(self.identities)
        self.roster.save(roster_path)
        keyholder_args: list[str] = []
        if self.scheme == CKKS:
            self.keyholder, address, self.keyholder_fingerprint = start_keyholder(
                self.workdir, roster_path, self.min_clients, self.preset)
            keyholder_args = ["--keyholder", address]
        self.aggregator = ServiceProcess("aggregator", [
            "aggregator", "serve", "--port", "0", "--roster", str(roster_path), "--scheme", self.scheme,
            "--min-clients", str(self.min_clients), "--expected-clients", str(self.expected_clients),
            "--round-timeout", str(self.round_timeout), "--db", str(self.workdir / "aggregator.db"),
            "--implicit-rounds" if self.implicit_rounds else "--no-implicit-rounds", *keyholder_args,
            *self._secagg_args(),
        ], self.workdir)
        self.aggregator.start()
        self.clients = [self.connect(identity) for identity in self.identities]

    def _secagg_args(self) -> list[str]:
        if self.scheme != SECAGG:
            return []
        s = self.secagg
        return ["--stage-timeout", str(s.stage_timeout), "--value-bound", str(s.value_bound),
                "--max-weight", str(s.max_weight), "--dropout-fraction", str(s.dropout_fraction),
                "--corrupt-fraction", str(s.corrupt_fraction)]

    def connect(self, identity: Identity) -> Client:
        """Another client of this federation's aggregator (e.g. an unenrolled one, in tests)."""
        return connect(self.aggregator_address, identity=identity, keyholder_fingerprint=self.keyholder_fingerprint,
                       roster=self.roster, allow_plain=self.scheme == PLAIN)

    def restart_aggregator(self) -> None:
        """Stop the aggregator process and start it again on the same port and store."""
        assert self.aggregator is not None
        port = self.aggregator.port
        self.aggregator.stop()
        self.aggregator.args[self.aggregator.args.index("--port") + 1] = str(port)
        self.aggregator.start()

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        for service in (self.aggregator, self.keyholder):
            if service is not None:
                service.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
