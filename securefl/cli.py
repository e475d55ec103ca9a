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

from typer.core import TyperGroup

from .errors import InvalidInput, SecureFLError
from .he.presets import DEFAULT_PRESET, PRESETS
from .keyfiles import IDENTITY_PASSPHRASE_ENV
from .schemes import CKKS, PLAIN, SECAGG

app = typer.Typer(help="securefl: secure aggregation for federated learning.", no_args_is_help=True)
keyholder_app = typer.Typer(help="The key-holder: holds the CKKS secret key, decrypts only aggregates.", no_args_is_help=True)
aggregator_app = typer.Typer(help="The untrusted aggregator: sums protected updates.", no_args_is_help=True)
app.add_typer(keyholder_app, name="keyholder")
app.add_typer(aggregator_app, name="aggregator")
psi_app = typer.Typer(help="Private set intersection: align the rows of two parties' tables.", no_args_is_help=True)
app.add_typer(psi_app, name="psi")


class _DefaultCommandGroup(TyperGroup):
    """`securefl enrol SITE...` runs the `federation` command; `securefl enrol request|sign|revoke`
    run theirs."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["federation", *args]
        return super().resolve_command(ctx, args)


enrol_app = typer.Typer(cls=_DefaultCommandGroup, no_args_is_help=True, help=(
    "Enrol a federation: `securefl enrol SITE...` creates everything centrally; `enrol request` (at a site) and "
    "`enrol sign` (at the operator) enrol a site whose keys never leave it; `enrol revoke` removes a party."))
app.add_typer(enrol_app, name="enrol")
console = Console(stderr=True)

PASSPHRASE_ENV = "SECUREFL_KEY_PASSPHRASE"
FEDERATION_HELP = "federation.json: the roster, the pinned keys, the CA and the security parameters."
TLS_CERT_HELP = "This party's TLS certificate (PEM)."
TLS_KEY_HELP = f"Its TLS private key (PEM, 0600; if encrypted, the passphrase comes from ${IDENTITY_PASSPHRASE_ENV})."
TLS_CA_HELP = "CA certificate(s) to trust (PEM); default: the federation file's CA."
INSECURE_HELP = "Plaintext gRPC, no TLS: anyone on the network reads and forges the traffic. For measurement only."


def _tls(cert: Optional[Path], key: Optional[Path], ca: Optional[Path], insecure: bool,
         federation_ca: bytes | None = None):
    """The TLS material of the flags, or None with --insecure (never both, never neither)."""
    from .tls import TlsConfig

    if insecure:
        if cert or key or ca:
            raise InvalidInput("--insecure and --tls-* exclude each other")
        return None
    if not (cert and key):
        raise InvalidInput("mutual TLS needs --tls-cert and --tls-key (or pass --insecure explicitly)")
    if ca is None and federation_ca is None:
        raise InvalidInput("give the CA to trust with --tls-ca")
    return TlsConfig.from_files(cert, key, ca if ca is not None else federation_ca)


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
    federation: Path = typer.Option(..., help=FEDERATION_HELP),
    min_clients: Optional[int] = typer.Option(None, help="Decrypt only sums of at least this many distinct signed contributions (default: the federation's min_participants)."),
    key_file: Optional[Path] = typer.Option(None, help=f"Encrypted key file (created if absent; passphrase from ${PASSPHRASE_ENV}). Keys stay in memory if omitted."),
    preset: str = typer.Option(DEFAULT_PRESET, help=f"CKKS preset for new keys: {', '.join(PRESETS)}."),
    db: Path = typer.Option(Path("keyholder.db"), help="SQLite store: decrypted rounds and the audit log."),
    host: str = "127.0.0.1",
    port: int = 7001,
    tls_cert: Optional[Path] = typer.Option(None, help=TLS_CERT_HELP),
    tls_key: Optional[Path] = typer.Option(None, help=TLS_KEY_HELP),
    tls_ca: Optional[Path] = typer.Option(None, help=TLS_CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
    verbose: bool = typer.Option(True, help="Log decisions to stderr."),
) -> None:
    """Serve the key-holder (mutual TLS; Decrypt answers only the aggregator's certificate)."""
    from .federation import Federation
    from .services.launch import load_or_create_secret, serve_keyholder

    _logging(verbose)
    try:
        pins = Federation.load(federation)
        tls = _tls(tls_cert, tls_key, tls_ca, insecure, pins.ca_certificate)
        secret = load_or_create_secret(key_file, os.environ.get(PASSPHRASE_ENV), preset)
        running = serve_keyholder(federation=pins, secret=secret, min_clients=min_clients, db=db, host=host, port=port,
                                  tls=tls, insecure=insecure)
    except SecureFLError as exc:
        _fail(exc)
    console.print(f"key-holder context fingerprint (clients pin this): {secret.fingerprint.hex()}")
    _serve_until_signal(running, ready_file)


@aggregator_app.command("serve")
def aggregator_serve(
    federation: Path = typer.Option(..., help=FEDERATION_HELP),
    identity: Path = typer.Option(..., help=f"The aggregator's identity file (signs acknowledgements; passphrase from ${IDENTITY_PASSPHRASE_ENV})."),
    scheme: str = typer.Option(CKKS, help=f"{CKKS} (needs --keyholder), {SECAGG} (pairwise masking) or {PLAIN} (no protection, for measurement)."),
    keyholder: Optional[str] = typer.Option(None, help="host:port of the key-holder."),
    min_clients: int = typer.Option(2, help="Default quorum of a round."),
    expected_clients: int = typer.Option(0, help="Close a round as soon as this many submitted (0: all enrolled)."),
    round_timeout: float = typer.Option(0.0, help="Seconds from a round's opening to its deadline (0: none)."),
    db: Path = typer.Option(Path("aggregator.db"), help="SQLite round store."),
    implicit_rounds: bool = typer.Option(True, help="Open a round on its first submission."),
    stage_timeout: float = typer.Option(30.0, help=f"{SECAGG}: seconds each stage waits before counting the silent as dropped (its security parameters come from the federation file)."),
    host: str = "127.0.0.1",
    port: int = 7000,
    tls_cert: Optional[Path] = typer.Option(None, help=TLS_CERT_HELP),
    tls_key: Optional[Path] = typer.Option(None, help=TLS_KEY_HELP),
    tls_ca: Optional[Path] = typer.Option(None, help=TLS_CA_HELP),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
    verbose: bool = typer.Option(True, help="Log round events to stderr."),
) -> None:
    """Serve the aggregator (mutual TLS)."""
    from .federation import Federation
    from .identity import Identity
    from .rounds.scheme import RoundConfig
    from .services.launch import serve_aggregator

    _logging(verbose)
    try:
        pins = Federation.load(federation)
        tls = _tls(tls_cert, tls_key, tls_ca, insecure, pins.ca_certificate)
        signer = Identity.load(identity)
        defaults = RoundConfig(min_clients, expected_clients or len(pins.roster), round_timeout)
        running = serve_aggregator(federation=pins, identity=signer, scheme=scheme, defaults=defaults,
                                   keyholder_address=keyholder, db=db, implicit_rounds=implicit_rounds, host=host,
                                   port=port, stage_timeout=stage_timeout, tls=tls, insecure=insecure)
    except SecureFLError as exc:
        _fail(exc)
    _serve_until_signal(running, ready_file)




@psi_app.command("serve")
def psi_serve(
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column."),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line."),
    peer: str = typer.Option(..., help="The only party served as party B: the securefl id its TLS certificate names."),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    max_peer_set: Optional[int] = typer.Option(None, min=1, help="Largest set the peer may bring (default: twice this party's)."),
    session_timeout: float = typer.Option(3600.0, min=1.0, help="Seconds a session may last before it is dropped."),
    host: str = "127.0.0.1",
    port: int = 7100,
    tls_cert: Optional[Path] = typer.Option(None, help=TLS_CERT_HELP),
    tls_key: Optional[Path] = typer.Option(None, help=TLS_KEY_HELP),
    tls_ca: Optional[Path] = typer.Option(None, help="CA certificate(s) the peer's certificate must chain to (PEM)."),
    ready_file: Optional[Path] = typer.Option(None, help="Write the bound port here once serving."),
) -> None:
    """Serve PSI as party A to one authenticated peer (mutual TLS), write the aligned indices
    after the first completed session, and exit."""
    from .psi import GroupPool, ServerParty, read_ids, write_indices
    from .services.psi import PsiService, tls_peer
    from .services.rpc import start_server

    finished = threading.Event()

    def record(outcome) -> None:
        write_indices(out, outcome.indices)
        console.print(f"intersection of {outcome.cardinality} rows with {peer}'s {outcome.peer_size}; wrote {out}")
        finished.set()

    try:
        own = read_ids(ids, column)
        tls = _tls(tls_cert, tls_key, tls_ca, insecure=False)
        with GroupPool() as pool:
            party = ServerParty(own, pool, expected_peer=peer, max_peer_set=max_peer_set, session_timeout=session_timeout)
            server, bound = start_server(PsiService(party, tls_peer, on_finish=record).register, host, port,
                                         workers=4, tls=tls)
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
    address: str = typer.Argument(..., help="host:port of party A."),
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column."),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line."),
    peer: str = typer.Option(..., help="Party A's securefl id: its TLS certificate must name it."),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    max_peer_set: Optional[int] = typer.Option(None, min=1, help="Largest set party A may bring (default: twice this party's)."),
    cardinality_only: bool = typer.Option(False, help="Learn only the size of the intersection."),
    tls_cert: Optional[Path] = typer.Option(None, help=TLS_CERT_HELP),
    tls_key: Optional[Path] = typer.Option(None, help=TLS_KEY_HELP),
    tls_ca: Optional[Path] = typer.Option(None, help="CA certificate(s) party A's certificate must chain to (PEM)."),
) -> None:
    """Join party A's PSI service as party B (mutual TLS) and write the aligned indices."""
    from .pki import SITE, PartyName
    from .psi import GroupPool, JoinerParty, read_ids, write_indices
    from .services.psi import join
    from .services.rpc import channel

    try:
        own = read_ids(ids, column)
        tls = _tls(tls_cert, tls_key, tls_ca, insecure=False)
        with GroupPool() as pool, channel(address, tls, server=PartyName(SITE, peer)) as psi_channel:
            outcome = join(psi_channel, JoinerParty(own, pool, max_peer_set=max_peer_set), cardinality_only=cardinality_only)
    except SecureFLError as exc:
        _fail(exc)
    write_indices(out, outcome.indices)
    console.print(f"intersection of {outcome.cardinality} rows with a peer of {outcome.peer_size}; wrote {out}")


@enrol_app.command("federation")
def enrol_federation(
    site_ids: list[str] = typer.Argument(..., help="Ids of the sites to enrol."),
    out: Path = typer.Option(Path("enrolment"), help="Directory for the CA, every party's files and federation.json."),
    name: str = typer.Option("securefl", help="Name of the federation (in its CA certificate)."),
    aggregator_id: str = typer.Option("aggregator", help="Id of the aggregator."),
    keyholder_id: str = typer.Option("keyholder", help="Id of the key-holder (ckks); empty for none."),
    operator_id: str = typer.Option("operator", help="Id of the operator credential."),
    dropout_fraction: float = typer.Option(0.1, help="secagg: tolerated fraction of dropouts."),
    corrupt_fraction: float = typer.Option(0.1, help="secagg: tolerated fraction of clients colluding with the aggregator."),
    value_bound: float = typer.Option(10.0, help="secagg: update values are clipped to [-bound, bound]."),
    max_weight: float = typer.Option(1000.0, help="secagg: largest weight a site may give."),
    min_participants: int = typer.Option(2, help="No sum of fewer contributions is ever revealed."),
) -> None:
    """Create a federation centrally: a CA, keys and certificates for every party, federation.json.
    Private keys are encrypted under one passphrase (SECUREFL_IDENTITY_PASSPHRASE, or typed)."""
    from .enrolment import create_federation, write_federation
    from .federation import SecurityParameters
    from .keyfiles import passphrase

    try:
        security = SecurityParameters(dropout_fraction, corrupt_fraction, value_bound, max_weight, min_participants)
        new = create_federation(site_ids, name=name, aggregator_id=aggregator_id, keyholder_id=keyholder_id or None,
                                operator_ids=(operator_id,), security=security)
        if (out / "federation.json").exists():
            raise InvalidInput(f"{out} already holds a federation; enrol new sites with `enrol request` and `enrol sign`")
        write_federation(out, new, passphrase("the enrolment's private keys", confirm=True))
    except SecureFLError as exc:
        _fail(exc)
    console.print(f"wrote the federation CA, {len(new.parties)} parties and {out / 'federation.json'}. Send:")
    for party in new.parties:
        files = ", ".join(path.name for path in party.files(out))
        console.print(f"  {party.name}: {files}, federation.json (keys encrypted under the enrolment passphrase)")
    console.print("  keep ca.key (the CA's key) with the operator, offline; every party pins federation.json")


@enrol_app.command("request")
def enrol_request(
    party_id: str = typer.Option(..., "--id", help="This party's id in the federation."),
    role: str = typer.Option("site", help="site, aggregator, keyholder or operator."),
    out: Path = typer.Option(Path("."), help="Directory for this party's keys and request."),
) -> None:
    """At a site: create its keys here (encrypted, 0600) and a request for the federation operator."""
    from .enrolment import write_request
    from .keyfiles import passphrase
    from .pki import PartyName

    try:
        party = PartyName(role, party_id)
        request = write_request(out, party, passphrase(f"the keys of {party}", confirm=True))
    except SecureFLError as exc:
        _fail(exc)
    console.print(f"kept {party_id}.identity.json and {party_id}.tls.key here (encrypted); send {request} to the "
                  "federation operator, who returns your certificate and federation.json")


@enrol_app.command("sign")
def enrol_sign(
    request: Path = typer.Argument(..., help="A request written by `securefl enrol request`."),
    directory: Path = typer.Option(Path("enrolment"), "--dir", help="The operator's directory (ca.key, ca.crt, federation.json)."),
    replace: bool = typer.Option(False, help="Replace the key of a party already enrolled (a lost key); its old certificate is revoked."),
) -> None:
    """At the operator: check a request, issue its certificate, enrol its key in federation.json."""
    from .enrolment import sign_request
    from .keyfiles import passphrase

    try:
        certificate = sign_request(request, directory, passphrase("the CA key"), replace=replace)
    except SecureFLError as exc:
        _fail(exc)
    console.print(f"wrote {certificate} and updated {directory / 'federation.json'}: send both to the party, and "
                  "the new federation.json to every party (services reload it at restart)")


@enrol_app.command("revoke")
def enrol_revoke(
    party_id: str = typer.Argument(..., help="Id of the party to remove."),
    role: str = typer.Option("site", help="site or operator."),
    directory: Path = typer.Option(Path("enrolment"), "--dir", help="The operator's directory."),
) -> None:
    """Remove a party from federation.json and revoke its certificate."""
    from .enrolment import revoke
    from .pki import PartyName

    try:
        revoke(directory, PartyName(role, party_id))
    except SecureFLError as exc:
        _fail(exc)
    console.print(f"removed {role} {party_id}; send the new federation.json to every party and restart the services")


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
