"""The `securefl` command: key-holder and aggregator services, PSI, enrolment, and the demo."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import SecureFLError
from .he.presets import DEFAULT_PRESET, PRESETS
from .identity import Identity, Roster
from .schemes import CKKS, PLAIN, SECAGG

app = typer.Typer(help="securefl: secure aggregation for federated learning.", no_args_is_help=True)
keyholder_app = typer.Typer(help="The key-holder: holds the CKKS secret key, decrypts only aggregates.", no_args_is_help=True)
aggregator_app = typer.Typer(help="The untrusted aggregator: sums protected updates.", no_args_is_help=True)
app.add_typer(keyholder_app, name="keyholder")
app.add_typer(aggregator_app, name="aggregator")
psi_app = typer.Typer(help="Private set intersection: align the rows of two parties' tables.", no_args_is_help=True)
app.add_typer(psi_app, name="psi")
console = Console(stderr=True)

PASSPHRASE_ENV = "SECUREFL_KEY_PASSPHRASE"


def _serve_until_signal(running, ready_file: Optional[Path]) -> None:
    """Announce the bound port, then serve until SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if ready_file is not None:
        _announce_port(ready_file, running.port)
    console.print(f"listening on port {running.port}")
    stop.wait()
    running.stop()


def _announce_port(ready_file: Path, port: int) -> None:
    partial = ready_file.with_suffix(".partial")
    partial.write_text(str(port))
    partial.rename(ready_file)  # atomic: readers never see a half-written port


def _fail(exc: SecureFLError) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


@keyholder_app.command("serve")
def keyholder_serve(
    roster: Path = typer.Option(..., help="JSON file of enrolled client ids -> Ed25519 public keys (hex)."),
    min_clients: int = typer.Option(2, help="Decrypt only sums of at least this many distinct signed contributions."),
    key_file: Optional[Path] = typer.Option(None, help=f"Encrypted key file (created if absent; passphrase from ${PASSPHRASE_ENV}). Keys stay in memory if omitted."),
    preset: str = typer.Option(DEFAULT_PRESET, help=f"CKKS preset for new keys: {', '.join(PRESETS)}."),
    db: Path = typer.Option(Path("keyholder.db"), help="SQLite store: decrypted rounds and the audit log."),
    host: str = "127.0.0.1",
    port: int = 7001,
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
    verbose: bool = typer.Option(True, help="Log decisions to stderr."),
) -> None:
    """Serve the key-holder."""
    from .services.launch import load_or_create_secret, serve_keyholder

    _logging(verbose)
    try:
        secret = load_or_create_secret(key_file, os.environ.get(PASSPHRASE_ENV), preset)
        running = serve_keyholder(roster=Roster.load(roster), secret=secret, min_clients=min_clients, db=db, host=host, port=port)
    except SecureFLError as exc:
        _fail(exc)
    console.print(f"key-holder context fingerprint (clients pin this): {secret.fingerprint.hex()}")
    _serve_until_signal(running, ready_file)


@aggregator_app.command("serve")
def aggregator_serve(
    roster: Path = typer.Option(..., help="JSON file of enrolled client ids -> Ed25519 public keys (hex)."),
    scheme: str = typer.Option(CKKS, help=f"{CKKS} (needs --keyholder), {SECAGG} (pairwise masking) or {PLAIN} (no protection, for measurement)."),
    keyholder: Optional[str] = typer.Option(None, help="host:port of the key-holder."),
    min_clients: int = typer.Option(2, help="Default quorum of a round."),
    expected_clients: int = typer.Option(0, help="Close a round as soon as this many submitted (0: all enrolled)."),
    round_timeout: float = typer.Option(0.0, help="Seconds from a round's opening to its deadline (0: none)."),
    db: Path = typer.Option(Path("aggregator.db"), help="SQLite round store."),
    implicit_rounds: bool = typer.Option(True, help="Open a round on its first submission."),
    stage_timeout: float = typer.Option(30.0, help=f"{SECAGG}: seconds each stage waits before counting the silent as dropped."),
    value_bound: float = typer.Option(10.0, help=f"{SECAGG}: updates are clipped to [-bound, bound]."),
    max_weight: float = typer.Option(1000.0, help=f"{SECAGG}: largest weight a client may give."),
    dropout_fraction: float = typer.Option(0.1, help=f"{SECAGG}: tolerated fraction of dropouts (sizes the neighbour graph)."),
    corrupt_fraction: float = typer.Option(0.1, help=f"{SECAGG}: tolerated fraction of colluding clients (sizes the graph)."),
    host: str = "127.0.0.1",
    port: int = 7000,
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
    verbose: bool = typer.Option(True, help="Log round events to stderr."),
) -> None:
    """Serve the aggregator."""
    from .services.launch import SecAggSettings, serve_aggregator
    from .services.rounds import RoundConfig

    _logging(verbose)
    try:
        enrolled = Roster.load(roster)
        defaults = RoundConfig(min_clients, expected_clients or len(enrolled), round_timeout)
        secagg = SecAggSettings(stage_timeout, value_bound, max_weight, dropout_fraction, corrupt_fraction)
        running = serve_aggregator(roster=enrolled, scheme=scheme, defaults=defaults, keyholder_address=keyholder,
                                   db=db, implicit_rounds=implicit_rounds, host=host, port=port, secagg=secagg)
    except SecureFLError as exc:
        _fail(exc)
    _serve_until_signal(running, ready_file)


_PEM = {"exists": True, "dir_okay": False, "readable": True}


@psi_app.command("serve")
def psi_serve(
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column."),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line."),
    peer: str = typer.Option(..., help="The only peer served: the common name of its TLS client certificate."),
    cert: Path = typer.Option(..., help="This party's TLS certificate (PEM).", **_PEM),
    key: Path = typer.Option(..., help="This party's TLS private key (PEM).", **_PEM),
    ca: Path = typer.Option(..., help="CA certificate (PEM) the peer's certificate must chain to.", **_PEM),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    max_peer_set: Optional[int] = typer.Option(None, min=1, help="Largest set the peer may bring (default: twice this party's)."),
    session_timeout: float = typer.Option(3600.0, min=1.0, help="Seconds a session may last before it is dropped."),
    host: str = "127.0.0.1",
    port: int = 7100,
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
) -> None:
    """Serve PSI as party A to one authenticated peer, write the aligned indices after the first
    completed session, and exit."""
    from .psi import GroupPool, ServerParty, read_ids, write_indices
    from .services.psi import PsiService, mutual_tls, tls_peer
    from .services.rpc import start_server

    finished = threading.Event()

    def record(outcome) -> None:
        write_indices(out, outcome.indices)
        console.print(f"intersection of {outcome.cardinality} rows with {peer}'s {outcome.peer_size}; wrote {out}")
        finished.set()

    try:
        own = read_ids(ids, column)
        server_credentials, _ = mutual_tls(cert, key, ca)
        with GroupPool() as pool:
            party = ServerParty(own, pool, expected_peer=peer, max_peer_set=max_peer_set, session_timeout=session_timeout)
            server, bound = start_server(PsiService(party, tls_peer, on_finish=record).register, host, port,
                                         workers=4, credentials=server_credentials)
            if ready_file is not None:
                _announce_port(ready_file, bound)
            console.print(f"PSI party A serving {len(own)} IDs to {peer} on port {bound}")
            for stop_signal in (signal.SIGTERM, signal.SIGINT):
                signal.signal(stop_signal, lambda *_: finished.set())
            finished.wait()
            server.stop(1).wait()
    except SecureFLError as exc:
        _fail(exc)


@psi_app.command("join")
def psi_join(
    address: str = typer.Argument(..., help="host:port of party A (its certificate must name this host)."),
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column."),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line."),
    cert: Path = typer.Option(..., help="This party's TLS certificate (PEM); party A expects its common name.", **_PEM),
    key: Path = typer.Option(..., help="This party's TLS private key (PEM).", **_PEM),
    ca: Path = typer.Option(..., help="CA certificate (PEM) party A's certificate must chain to.", **_PEM),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    max_peer_set: Optional[int] = typer.Option(None, min=1, help="Largest set party A may bring (default: twice this party's)."),
    cardinality_only: bool = typer.Option(False, help="Learn only the size of the intersection."),
) -> None:
    """Join party A's PSI service as party B and write the aligned indices."""
    from .psi import GroupPool, JoinerParty, read_ids, write_indices
    from .services.psi import join, mutual_tls
    from .services.rpc import channel

    try:
        own = read_ids(ids, column)
        _, channel_credentials = mutual_tls(cert, key, ca)
        with GroupPool() as pool, channel(address, channel_credentials) as psi_channel:
            outcome = join(psi_channel, JoinerParty(own, pool, max_peer_set=max_peer_set), cardinality_only=cardinality_only)
    except SecureFLError as exc:
        _fail(exc)
    write_indices(out, outcome.indices)
    console.print(f"intersection of {outcome.cardinality} rows with a peer of {outcome.peer_size}; wrote {out}")


@app.command()
def enrol(
    client_ids: list[str] = typer.Argument(..., help="Ids of the sites to enrol."),
    out: Path = typer.Option(Path("enrolment"), help="Directory for identity files and roster.json."),
) -> None:
    """Create Ed25519 identities for sites and the roster the services load."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        identities = [Identity.generate(cid) for cid in client_ids]
    except SecureFLError as exc:
        _fail(exc)
    for identity in identities:
        identity.save(out / f"{identity.client_id}.identity.json")
    Roster.of(identities).save(out / "roster.json")
    console.print(f"wrote {len(identities)} identities and {out / 'roster.json'}")


@app.command()
def bench(
    quick: bool = typer.Option(False, help="The smallest grid: under 2 minutes on 2 cores."),
    schemes: Optional[str] = typer.Option(None, help="Comma-separated schemes (plain is always measured)."),
    sizes: Optional[str] = typer.Option(None, help="Comma-separated model sizes: 10k, small-cnn, 1M, resnet18."),
    clients: Optional[str] = typer.Option(None, help="Comma-separated client counts for the client sweep."),
    size_sweep_clients: Optional[int] = typer.Option(None, help="Clients while sweeping model sizes."),
    repeat: Optional[int] = typer.Option(None, min=1, help="Rounds per configuration (the median is kept)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results and the machine's description here."),
    plot_dir: Optional[Path] = typer.Option(None, "--plot", help="Write PNG charts of the overhead here."),
) -> None:
    """Measure each scheme against plain aggregation across model sizes and client counts."""
    import dataclasses
    import json

    from rich.progress import Progress
    from rich.table import Table

    from .benchmark import DEFAULT, MODEL_SIZES, QUICK, as_json, plot, run

    grid = QUICK if quick else DEFAULT
    try:
        chosen = tuple(dict.fromkeys([PLAIN, *(schemes.split(",") if schemes else grid.schemes)]))
        unknown = [s for s in chosen if s not in (PLAIN, CKKS, SECAGG)] + [
            s for s in (sizes.split(",") if sizes else []) if s not in MODEL_SIZES]
        if unknown:
            raise typer.BadParameter(f"unknown scheme or size: {', '.join(unknown)}")
        grid = dataclasses.replace(
            grid, schemes=chosen, sizes=tuple(sizes.split(",")) if sizes else grid.sizes,
            clients=tuple(int(c) for c in clients.split(",")) if clients else grid.clients,
            size_sweep_clients=size_sweep_clients or grid.size_sweep_clients, repeat=repeat or grid.repeat,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    out = Console(width=max(Console().width, 132))
    with Progress(console=out) as progress:
        task = progress.add_task("benchmarking", total=len(grid.configurations()))
        results = run(grid, on_progress=lambda m: progress.update(
            task, advance=1, description=f"{m.scheme} {m.size} x {m.clients} clients"))
    table = Table(title="securefl bench: cost of each scheme (ratio to plain in the same run)")
    for column in ("scheme", "model", "clients", "client s", "aggregator s/sub", "reveal s", "MB/client",
                   "bytes ×", "round s", "round ×", "aggr. peak MB"):
        table.add_column(column, justify="right")
    for m in results:
        r = m.ratios
        table.add_row(m.scheme, m.size, str(m.clients), f"{m.client_seconds:.4f}",
                      f"{m.aggregator_seconds:.4f}", f"{m.reveal_seconds:.3f}", f"{m.bytes_per_client / 1e6:.2f}",
                      f"{r.get('bytes', 1):.2f}", f"{m.round_seconds:.2f}", f"{r.get('round', 1):.1f}",
                      f"{m.aggregator_peak_mb:.0f}")
    out.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(as_json(results, grid), indent=2) + "\n")
        out.print(f"wrote {json_path}")
    if plot_dir is not None:
        for chart in plot(results, grid, plot_dir):
            out.print(f"wrote {chart}")


@app.command()
def demo(
    scheme: str = typer.Option(CKKS, help="Protection scheme of the secure run."),
    clients: int = typer.Option(5, min=2, max=20, help="Number of hospitals."),
    rounds: int = typer.Option(10, min=1, max=100, help="Federated rounds."),
    seed: int = typer.Option(0, help="Seed of the data split and model initialisation."),
) -> None:
    """Train a small model on breast-cancer data split across hospitals, securely and in
    plaintext FedAvg, and compare accuracy, time and bytes."""
    from .demo import run_demo

    try:
        run_demo(scheme=scheme, n_clients=clients, rounds=rounds, seed=seed, console=Console())
    except SecureFLError as exc:
        _fail(exc)
