"""The sites of a LocalFederation run from worker processes, for benchmarks.

LocalFederation's clients live in the caller's process, so fifty sites are fifty threads taking
turns at one interpreter lock and one set of caches: a cost no deployment has (each site is a
process on a machine of its own). `SiteProcesses` runs the same sites, from the same enrolment,
in a few worker processes instead (one per core by default, threads within each); they still
share this machine's cores with the services, so a round's time still includes every site's
own protection work, but at a lower scheduling priority: when the aggregator and a site both
want a core, the aggregator gets it, as it would on a machine of its own.

A worker is a process of many threads that each move megabytes per round, as the aggregator is,
and takes the aggregator's allocator settings (`tune_allocator`). With glibc's defaults, about
14 MB of a site's buffers per round (its encoded and serialized update, the result's chunks and
their copies) came as fresh pages the kernel faulted in and zeroed: 8 % of the sites' CPU in a
50-site SecAgg+ round (3.42-3.72 against 3.24-3.34 CPU-s in alternating runs).
The client library itself leaves the allocator of the process it lives in (the site's own
training process) as it is."""

from __future__ import annotations

import multiprocessing
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np

from ..client import RoundStats, connect
from ..enrolment import FEDERATION_FILE, write_party
from ..federation import Federation
from ..identity import Identity
from ..pki import SITE
from ..schemes import PLAIN
from ..services.launch import tune_allocator
from ..simulation import LocalFederation
from ..tls import TlsConfig


SITE_NICENESS = 10  # the services come first when both want a core: they would have cores of their own


def site_update(index: int, round_id: str, params: int) -> np.ndarray:
    """Site `index`'s update in round `round_id`: the same whichever process makes it."""
    return np.random.default_rng([index, len(round_id)]).uniform(-1, 1, size=params).astype(np.float32)


def site_weight(index: int) -> float:
    return 1.0 + index % 4


def _serve(connection: Connection, address: str, workdir: str, sites: list[tuple[int, list[str]]], passphrase: str,
           allow_plain: bool, barrier: Barrier) -> None:
    """A worker process: connect its sites, then per request make their updates for a round
    ("prepare") or run that round ("run"), until told to stop."""
    os.nice(SITE_NICENESS)
    tune_allocator()
    federation = Federation.load(Path(workdir) / FEDERATION_FILE)
    clients = {}
    for index, (identity_file, key_file, certificate_file) in sites:
        tls = TlsConfig.from_files(Path(certificate_file), Path(key_file), federation.ca_certificate, passphrase)
        clients[index] = connect(address, identity=Identity.load(Path(identity_file), passphrase),
                                 federation=federation, tls=tls, allow_plain=allow_plain)
    connection.send("ready")
    prepared: str | None = None
    updates: dict[int, np.ndarray] = {}
    with ThreadPoolExecutor(len(clients)) as pool:
        while (request := connection.recv()) is not None:
            if request[0] == "prepare":
                _, prepared, params = request
                updates = {i: site_update(i, prepared, params) for i in clients}
                connection.send("prepared")
                continue
            _, round_id, together = request
            if round_id != prepared:
                connection.send(RuntimeError(f"round {round_id!r} has no updates: call prepare first"))
                continue

            def run(index: int) -> RoundStats:
                client = clients[index]
                client.aggregate(updates[index], weight=site_weight(index), round_id=round_id,
                                 before_upload=barrier.wait if together else None)
                return client.last_stats

            try:
                connection.send({i: stats for i, stats in zip(clients, pool.map(run, clients))})
            except Exception as exc:  # the parent reports it; this worker goes on
                connection.send(exc)


class SiteProcesses:
    """Every site of `fed` takes part in each round, from `processes` worker processes:
    `sites.prepare(round_id, params)`, then `sites.aggregate(round_id)`."""

    def __init__(self, fed: LocalFederation, processes: int = 2) -> None:
        assert fed.enrolment is not None
        passphrase = secrets.token_urlsafe(16)
        directory = fed.workdir / "sites"
        directory.mkdir(mode=0o700)
        parties = [p for p in fed.enrolment.parties if p.name.role == SITE]
        files = [(index, [str(f) for f in write_party(directory, party, passphrase)])
                 for index, party in enumerate(parties)]
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(len(parties))
        self._workers: list[tuple[multiprocessing.Process, Connection]] = []
        for share in range(min(processes, len(parties))):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, daemon=True, args=(
                child, fed.aggregator_address, str(fed.workdir), files[share::processes], passphrase,
                fed.scheme == PLAIN, barrier))
            process.start()
            self._workers.append((process, parent))
        for _, connection in self._workers:
            connection.recv()

    def prepare(self, round_id: str, params: int) -> None:
        """Make every site's update for the next round (`site_update`), as training would before
        a site calls aggregate: not part of the round (25 updates of 1M values take a worker
        about 0.13 s, during which no site would have started)."""
        self._ask_every_worker(("prepare", round_id, params))

    def aggregate(self, round_id: str, together: bool = False) -> list[RoundStats]:
        """One round of every site, with the updates `prepare` made; with `together`, uploads
        start at once after every site protected its update. The sites' statistics, by site
        index."""
        stats: dict[int, RoundStats] = {}
        for answer in self._ask_every_worker(("run", round_id, together)):
            stats.update(answer)
        return [stats[i] for i in sorted(stats)]

    def _ask_every_worker(self, request: tuple) -> list:
        """Every worker's answer to `request`; a worker's exception is raised once all have
        answered (so no answer is left behind for the next request)."""
        for _, connection in self._workers:
            connection.send(request)
        answers = [connection.recv() for _, connection in self._workers]
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    def close(self) -> None:
        for process, connection in self._workers:
            connection.send(None)
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    def __enter__(self) -> SiteProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
