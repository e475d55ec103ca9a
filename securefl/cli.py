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
    vector_length: int = typer.Option(0, help="Length of every round's update incl. the weight (0: fixed by each round's first submission)."),
    db: Path = typer.Option(Path("aggregator.db"), help="SQLite round store (sums and results go to DB-sums/)."),
    max_inflight_mb: Optional[int] = typer.Option(None, min=1, help="Memory for submissions being received; others wait under flow control (default: 8 submissions, 64 MiB to 1/4 of free memory)."),
    checkpoint_seconds: float = typer.Option(60.0, min=0.0, help="Checkpoint an open round's sum this often (0: after every submission); clients resend what a restart lost since."),
    shard: Optional[str] = typer.Option(None, help="INDEX/COUNT: serve one chunk range of rounds split across COUNT aggregators; shard 0 coordinates."),
    coordinator: Optional[str] = typer.Option(None, help="host:port of shard 0, for the other shards."),
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
    from .masking.server import SecAggSettings
    from .rounds.scheme import RoundConfig
    from .services.launch import serve_aggregator

    _logging(verbose)
    try:
        enrolled = Roster.load(roster)
        defaults = RoundConfig(min_clients, expected_clients or len(enrolled), round_timeout, vector_length)
        secagg = SecAggSettings(stage_timeout, value_bound, max_weight, dropout_fraction, corrupt_fraction)
        running = serve_aggregator(roster=enrolled, scheme=scheme, defaults=defaults, keyholder_address=keyholder,
                                   db=db, implicit_rounds=implicit_rounds, host=host, port=port, secagg=secagg,
                                   max_inflight_mb=max_inflight_mb, checkpoint_seconds=checkpoint_seconds,
                                   shard=_shard(shard), coordinator_address=coordinator)
    except SecureFLError as exc:
        _fail(exc)
    _serve_until_signal(running, ready_file)


def _shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    index, _, count = value.partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        raise typer.BadParameter(f"--shard takes INDEX/COUNT, e.g. 0/3, not {value!r}") from None


@psi_app.command("serve")
def psi_serve(
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column."),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line."),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    host: str = "127.0.0.1",
    port: int = 7100,
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
) -> None:
    """Serve one PSI session as party A, write the aligned indices, and exit."""
    from .psi.group import GroupPool
    from .psi.ids import read_ids, write_indices
    from .psi.protocol import ServerParty
    from .psi.service import PsiService
    from .services.rpc import start_server

    try:
        own = read_ids(ids, column)
    except SecureFLError as exc:
        _fail(exc)
    finished = threading.Event()

    def record(outcome) -> None:
        write_indices(out, outcome.indices)
        console.print(f"intersection of {outcome.cardinality} rows with a peer of {outcome.peer_size}; wrote {out}")
        finished.set()

    with GroupPool() as pool:
        server, bound = start_server(PsiService(ServerParty(own, pool), on_finish=record).register, host, port, workers=4)
        if ready_file is not None:
            _announce_port(ready_file, bound)
        console.print(f"PSI party A serving {len(own)} IDs on port {bound}")
        finished.wait()
        server.stop(1).wait()


@psi_app.command("join")
def psi_join(
    address: str = typer.Argument(..., help="host:port of party A."),
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column."),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line."),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    cardinality_only: bool = typer.Option(False, help="Learn only the size of the intersection."),
) -> None:
    """Join party A's PSI session as party B and write the aligned indices."""
    from .psi.group import GroupPool
    from .psi.ids import read_ids, write_indices
    from .psi.service import join

    try:
        own = read_ids(ids, column)
        with GroupPool() as pool:
            outcome = join(address, own, pool, cardinality_only=cardinality_only)
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
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the result tables, rendered from the JSON of this run, here (Markdown)."),
    plot_dir: Optional[Path] = typer.Option(None, "--plot", help="Write PNG charts of the overhead here."),
) -> None:
    """Measure each scheme against plain aggregation across model sizes and client counts."""
    import dataclasses

    from rich.progress import Progress
    from rich.table import Table

    from .benchmark.charts import plot
    from .benchmark.grid import DEFAULT, MODEL_SIZES, QUICK, report_results, run, tables
    from .benchmark.harness import envelope, write_results

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
    report = envelope("securefl bench")
    with Progress(console=out) as progress:
        task = progress.add_task("benchmarking", total=len(grid.configurations()))
        results = run(grid, on_progress=lambda m: progress.update(
            task, advance=1, description=f"{m.scheme} {m.size} x {m.clients} clients"))
    report = write_results({**report, **report_results(results, grid)}, tables, json_path, markdown)
    for rendered in tables(report):
        table = Table(title=f"securefl bench: {rendered.caption.rstrip(':')} (ratios to plain in the same run)")
        for i, column in enumerate(rendered.columns):
            table.add_column(column, justify="left" if i < rendered.text_columns else "right")
        for row in rendered.rows:
            table.add_row(*row)
        out.print(table)
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
