"""The `securefl` command: key-holder and aggregator services, PSI, enrolment, and the demo."""

from __future__ import annotations

import threading
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from typer.core import TyperGroup

from .cli_support import (
    CONFIG_OPTION, INPUT_DIR, INPUT_FILE, PORT, PRINT_CONFIG_OPTION, READY_FILE_OPTION, VERBOSE_OPTION, fail, serve,
    setting, settings_from,
)
from .errors import InvalidInput, SecureFLError
from .keyfiles import IDENTITY_PASSPHRASE_ENV
from .pki import ROLES
from .schemes import DEFAULT_SCHEME, PLAIN, SCHEMES
from .services.settings import (
    AggregatorSettings, HeSchemeName, KeyHolderSettings, LogFormat, LogLevel, PresetName, PsiSettings, SchemeName,
)

app = typer.Typer(help="securefl: secure aggregation for federated learning. Exit codes: 0 done (a service: drained "
                  "after SIGTERM), 1 failed, 2 bad usage, configuration or file, 3 a key could not be opened, "
                  "4 unavailable (a port, a peer).", no_args_is_help=True)
keyholder_app = typer.Typer(help="The key-holder: holds the HE secret keys, releases only honest sums.", no_args_is_help=True)
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

Role = Enum("Role", {role: role for role in ROLES}, type=str)

TLS_CERT_HELP = "This party's TLS certificate (PEM)."
TLS_KEY_HELP = f"Its TLS private key (PEM, 0600; if encrypted, the passphrase comes from ${IDENTITY_PASSPHRASE_ENV})."


def _client_tls(cert: Optional[Path], key: Optional[Path], ca: Optional[Path]):
    """TLS material of a client command: all three files are required."""
    from .tls import TlsConfig

    if not (cert and key and ca):
        raise InvalidInput("mutual TLS needs --tls-cert, --tls-key and --tls-ca")
    return TlsConfig.from_files(cert, key, ca)


@keyholder_app.command("serve")
def keyholder_serve(
    ctx: typer.Context,
    config: Optional[Path] = CONFIG_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
    federation: Optional[Path] = setting(KeyHolderSettings, "federation", **INPUT_FILE),
    identity: Optional[Path] = setting(KeyHolderSettings, "identity", **INPUT_FILE),
    scheme: Optional[HeSchemeName] = setting(KeyHolderSettings, "scheme"),
    preset: Optional[PresetName] = setting(KeyHolderSettings, "preset"),
    precision_bits: Optional[int] = setting(KeyHolderSettings, "precision_bits", min=4, max=39),
    rotate_every: Optional[int] = setting(KeyHolderSettings, "rotate_every", min=1),
    min_clients: Optional[int] = setting(KeyHolderSettings, "min_clients", min=1),
    keystore: Optional[Path] = setting(KeyHolderSettings, "keystore", dir_okay=False),
    audit_log: Optional[Path] = setting(KeyHolderSettings, "audit_log", dir_okay=False),
    decryption_workers: Optional[int] = setting(KeyHolderSettings, "decryption_workers", min=0),
    host: Optional[str] = setting(KeyHolderSettings, "host"),
    port: Optional[int] = setting(KeyHolderSettings, "port", **PORT),
    tls_cert: Optional[Path] = setting(KeyHolderSettings, "tls_cert", **INPUT_FILE),
    tls_key: Optional[Path] = setting(KeyHolderSettings, "tls_key", **INPUT_FILE),
    tls_ca: Optional[Path] = setting(KeyHolderSettings, "tls_ca", **INPUT_FILE),
    insecure: Optional[bool] = setting(KeyHolderSettings, "insecure", "--insecure"),
    metrics_host: Optional[str] = setting(KeyHolderSettings, "metrics_host"),
    metrics_port: Optional[int] = setting(KeyHolderSettings, "metrics_port", **PORT),
    log_level: Optional[LogLevel] = setting(KeyHolderSettings, "log_level"),
    log_format: Optional[LogFormat] = setting(KeyHolderSettings, "log_format"),
    shutdown_grace: Optional[float] = setting(KeyHolderSettings, "shutdown_grace", min=0),
    ready_file: Optional[Path] = READY_FILE_OPTION,
    verbose: Optional[bool] = VERBOSE_OPTION,
) -> None:
    """Serve the key-holder (mutual TLS; RegisterRound and Decrypt answer only the aggregator's certificate).
    Settings: --config FILE, then $SECUREFL_KEYHOLDER_<SETTING>, then these flags."""
    from .services.launch import serve_keyholder

    serve(settings_from(ctx, KeyHolderSettings, config, print_config, verbose), serve_keyholder, ready_file)


@aggregator_app.command("serve")
def aggregator_serve(
    ctx: typer.Context,
    config: Optional[Path] = CONFIG_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
    federation: Optional[Path] = setting(AggregatorSettings, "federation", **INPUT_FILE),
    identity: Optional[Path] = setting(AggregatorSettings, "identity", **INPUT_FILE),
    scheme: Optional[SchemeName] = setting(AggregatorSettings, "scheme"),
    keyholder: Optional[str] = setting(AggregatorSettings, "keyholder"),
    min_clients: Optional[int] = setting(AggregatorSettings, "min_clients", min=1),
    expected_clients: Optional[int] = setting(AggregatorSettings, "expected_clients", min=0),
    round_timeout: Optional[float] = setting(AggregatorSettings, "round_timeout", min=0),
    db: Optional[Path] = setting(AggregatorSettings, "db", dir_okay=False),
    implicit_rounds: Optional[bool] = setting(AggregatorSettings, "implicit_rounds",
                                              "--implicit-rounds/--no-implicit-rounds"),
    stage_timeout: Optional[float] = setting(AggregatorSettings, "stage_timeout", min=0),
    max_open_rounds: Optional[int] = setting(AggregatorSettings, "max_open_rounds", min=1),
    max_open_rounds_per_site: Optional[int] = setting(AggregatorSettings, "max_open_rounds_per_site", min=1),
    round_retention: Optional[float] = setting(AggregatorSettings, "round_retention", min=0),
    max_waits_per_site: Optional[int] = setting(AggregatorSettings, "max_waits_per_site", min=1),
    max_streams_per_site: Optional[int] = setting(AggregatorSettings, "max_streams_per_site", min=1),
    vector_length: Optional[int] = setting(AggregatorSettings, "vector_length", min=0),
    max_inflight_mb: Optional[int] = setting(AggregatorSettings, "max_inflight_mb", min=1),
    checkpoint_seconds: Optional[float] = setting(AggregatorSettings, "checkpoint_seconds", min=0),
    shard: Optional[str] = setting(AggregatorSettings, "shard"),
    coordinator: Optional[str] = setting(AggregatorSettings, "coordinator"),
    host: Optional[str] = setting(AggregatorSettings, "host"),
    port: Optional[int] = setting(AggregatorSettings, "port", **PORT),
    tls_cert: Optional[Path] = setting(AggregatorSettings, "tls_cert", **INPUT_FILE),
    tls_key: Optional[Path] = setting(AggregatorSettings, "tls_key", **INPUT_FILE),
    tls_ca: Optional[Path] = setting(AggregatorSettings, "tls_ca", **INPUT_FILE),
    insecure: Optional[bool] = setting(AggregatorSettings, "insecure", "--insecure"),
    metrics_host: Optional[str] = setting(AggregatorSettings, "metrics_host"),
    metrics_port: Optional[int] = setting(AggregatorSettings, "metrics_port", **PORT),
    log_level: Optional[LogLevel] = setting(AggregatorSettings, "log_level"),
    log_format: Optional[LogFormat] = setting(AggregatorSettings, "log_format"),
    shutdown_grace: Optional[float] = setting(AggregatorSettings, "shutdown_grace", min=0),
    ready_file: Optional[Path] = READY_FILE_OPTION,
    verbose: Optional[bool] = VERBOSE_OPTION,
) -> None:
    """Serve the aggregator (mutual TLS). Settings: --config FILE, then
    $SECUREFL_AGGREGATOR_<SETTING>, then these flags."""
    from .services.launch import serve_aggregator

    serve(settings_from(ctx, AggregatorSettings, config, print_config, verbose), serve_aggregator, ready_file)


@psi_app.command("serve")
def psi_serve(
    ctx: typer.Context,
    config: Optional[Path] = CONFIG_OPTION,
    print_config: bool = PRINT_CONFIG_OPTION,
    ids: Optional[Path] = setting(PsiSettings, "ids", **INPUT_FILE),
    out: Optional[Path] = setting(PsiSettings, "out", dir_okay=False),
    peer: Optional[str] = setting(PsiSettings, "peer"),
    column: Optional[str] = setting(PsiSettings, "column"),
    max_peer_set: Optional[int] = setting(PsiSettings, "max_peer_set", min=1),
    session_timeout: Optional[float] = setting(PsiSettings, "session_timeout", min=1.0),
    host: Optional[str] = setting(PsiSettings, "host"),
    port: Optional[int] = setting(PsiSettings, "port", **PORT),
    tls_cert: Optional[Path] = setting(PsiSettings, "tls_cert", **INPUT_FILE),
    tls_key: Optional[Path] = setting(PsiSettings, "tls_key", **INPUT_FILE),
    tls_ca: Optional[Path] = setting(PsiSettings, "tls_ca", **INPUT_FILE),
    log_level: Optional[LogLevel] = setting(PsiSettings, "log_level"),
    log_format: Optional[LogFormat] = setting(PsiSettings, "log_format"),
    shutdown_grace: Optional[float] = setting(PsiSettings, "shutdown_grace", min=0),
    ready_file: Optional[Path] = READY_FILE_OPTION,
) -> None:
    """Serve PSI as party A to one authenticated peer (mutual TLS), write the aligned indices
    after the first completed session, and exit. Settings: --config FILE, then
    $SECUREFL_PSI_<SETTING>, then these flags."""
    from .psi import write_indices
    from .services.launch import serve_psi

    settings = settings_from(ctx, PsiSettings, config, print_config)
    finished = threading.Event()

    def record(outcome) -> None:
        write_indices(settings.out, outcome.indices)
        console.print(f"intersection of {outcome.cardinality} rows with {settings.peer}'s {outcome.peer_size}; "
                      f"wrote {settings.out}")
        finished.set()

    serve(settings, lambda s: serve_psi(s, record), ready_file, finished)


@psi_app.command("join")
def psi_join(
    address: str = typer.Argument(..., help="host:port of party A."),
    ids: Path = typer.Option(..., help="IDs, one per line, or a CSV with --column.", **INPUT_FILE),
    out: Path = typer.Option(..., help="Write the aligned row indices here, one per line.", dir_okay=False),
    peer: str = typer.Option(..., help="Party A's securefl id: its TLS certificate must name it."),
    column: Optional[str] = typer.Option(None, help="CSV column holding the IDs."),
    max_peer_set: Optional[int] = typer.Option(None, min=1, help="Largest set party A may bring (default: twice this party's)."),
    cardinality_only: bool = typer.Option(False, help="Learn only the size of the intersection."),
    tls_cert: Path = typer.Option(..., help=TLS_CERT_HELP, **INPUT_FILE),
    tls_key: Path = typer.Option(..., help=TLS_KEY_HELP, **INPUT_FILE),
    tls_ca: Path = typer.Option(..., help="CA certificate(s) party A's certificate must chain to (PEM).", **INPUT_FILE),
) -> None:
    """Join party A's PSI service as party B (mutual TLS) and write the aligned indices."""
    from .pki import SITE, PartyName
    from .psi import GroupPool, JoinerParty, read_ids, write_indices
    from .services.psi import join
    from .services.rpc import channel

    try:
        own = read_ids(ids, column)
        tls = _client_tls(tls_cert, tls_key, tls_ca)
        with GroupPool() as pool, channel(address, tls, server=PartyName(SITE, peer)) as psi_channel:
            outcome = join(psi_channel, JoinerParty(own, pool, max_peer_set=max_peer_set), cardinality_only=cardinality_only)
    except SecureFLError as exc:
        fail(exc)
    write_indices(out, outcome.indices)
    console.print(f"intersection of {outcome.cardinality} rows with a peer of {outcome.peer_size}; wrote {out}")


ServiceRole = Enum("ServiceRole", {role: role for role in ("aggregator", "keyholder")}, type=str)


@app.command()
def health(
    address: str = typer.Argument(..., help="host:port of the service."),
    federation: Path = typer.Option(..., help="federation.json: names the service's certificate and gives the CA.",
                                    **INPUT_FILE),
    role: ServiceRole = typer.Option("aggregator", help="The service at the address."),
    service: str = typer.Option("", help="The gRPC service to ask about, e.g. securefl.v1.Aggregator (default: the "
                                         "whole server)."),
    tls_cert: Optional[Path] = typer.Option(None, help=TLS_CERT_HELP, **INPUT_FILE),
    tls_key: Optional[Path] = typer.Option(None, help=TLS_KEY_HELP, **INPUT_FILE),
    tls_ca: Optional[Path] = typer.Option(None, help="CA certificate(s) to trust (PEM); default: the federation "
                                                     "file's CA.", **INPUT_FILE),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext, for a service started with --insecure."),
    timeout: float = typer.Option(5.0, min=0.1, help="Seconds to wait for the answer."),
) -> None:
    """Ask a service's standard gRPC health check, over mutual TLS with any certificate of the
    federation (a supervisor's probe). Prints the status; exit 0 when SERVING, 1 otherwise, 4
    when the service cannot be reached."""
    import grpc

    from .errors import ServiceUnavailable
    from .exitcodes import FAILED, OK
    from .federation import Federation
    from .services.health import check
    from .services.rpc import channel
    from .tls import TlsConfig

    try:
        pins = Federation.load(federation)
        if insecure and (tls_cert or tls_key or tls_ca):
            raise InvalidInput("--insecure and --tls-* exclude each other")
        if not insecure and not (tls_cert and tls_key):
            raise InvalidInput("mutual TLS needs --tls-cert and --tls-key (or --insecure for a plaintext service)")
        tls = None if insecure else TlsConfig.from_files(tls_cert, tls_key, tls_ca or pins.ca_certificate)
        with channel(address, tls, server=pins.party(role.value), insecure=insecure) as service_channel:
            try:
                status = check(service_channel, service, timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise ServiceUnavailable(f"{address}: {exc.code().name.lower()}: {exc.details()}") from None
                status = "SERVICE_UNKNOWN"
    except SecureFLError as exc:
        fail(exc)
    typer.echo(status)
    raise typer.Exit(OK if status == "SERVING" else FAILED)


@enrol_app.command("federation")
def enrol_federation(
    site_ids: list[str] = typer.Argument(..., help="Ids of the sites to enrol."),
    out: Path = typer.Option(Path("enrolment"), help="Directory for the CA, every party's files and federation.json."),
    name: str = typer.Option("securefl", help="Name of the federation (in its CA certificate)."),
    aggregator_id: str = typer.Option("aggregator", help="Id of the aggregator."),
    keyholder_id: str = typer.Option("keyholder", help="Id of the key-holder (bfv, ckks); empty for none."),
    operator_id: str = typer.Option("operator", help="Id of the operator credential."),
    dropout_fraction: float = typer.Option(0.1, help="secagg: tolerated fraction of dropouts."),
    corrupt_fraction: float = typer.Option(0.1, help="secagg: tolerated fraction of clients colluding with the aggregator."),
    value_bound: float = typer.Option(10.0, help="Update values are clipped to [-bound, bound] (secagg, bfv, ckks): keep it tight, precision is relative to it."),
    max_weight: float = typer.Option(1000.0, help="Largest weight a site may give (secagg, bfv, ckks): keep it tight, precision is relative to it."),
    min_participants: int = typer.Option(2, help="No sum of fewer contributions is ever revealed."),
    precision_bits: Optional[int] = typer.Option(None, min=4, max=39, help="bfv: bits of each client's quantized value (default 12; the key-holder's --precision-bits overrides)."),
) -> None:
    """Create a federation centrally: a CA, keys and certificates for every party, federation.json.
    Private keys are encrypted under one passphrase (SECUREFL_IDENTITY_PASSPHRASE, or typed)."""
    from .enrolment import create_federation, write_federation
    from .federation import SecurityParameters
    from .keyfiles import passphrase

    try:
        security = SecurityParameters(dropout_fraction, corrupt_fraction, value_bound, max_weight, min_participants,
                                      precision_bits)
        new = create_federation(site_ids, name=name, aggregator_id=aggregator_id, keyholder_id=keyholder_id or None,
                                operator_ids=(operator_id,), security=security)
        if (out / "federation.json").exists():
            raise InvalidInput(f"{out} already holds a federation; enrol new sites with `enrol request` and `enrol sign`")
        write_federation(out, new, passphrase("the enrolment's private keys", confirm=True))
    except SecureFLError as exc:
        fail(exc)
    console.print(f"wrote the federation CA, {len(new.parties)} parties and {out / 'federation.json'}. Send:")
    for party in new.parties:
        files = ", ".join(path.name for path in party.files(out))
        console.print(f"  {party.name}: {files}, federation.json (keys encrypted under the enrolment passphrase)")
    console.print("  keep ca.key (the CA's key) with the operator, offline; every party pins federation.json")


@enrol_app.command("request")
def enrol_request(
    party_id: str = typer.Option(..., "--id", help="This party's id in the federation."),
    role: Role = typer.Option("site", help="The party's role."),
    out: Path = typer.Option(Path("."), help="Directory for this party's keys and request."),
) -> None:
    """At a site: create its keys here (encrypted, 0600) and a request for the federation operator."""
    from .enrolment import write_request
    from .keyfiles import passphrase
    from .pki import PartyName

    try:
        party = PartyName(role.value, party_id)
        request = write_request(out, party, passphrase(f"the keys of {party}", confirm=True))
    except SecureFLError as exc:
        fail(exc)
    console.print(f"kept {party_id}.identity.json and {party_id}.tls.key here (encrypted); send {request} to the "
                  "federation operator, who returns your certificate and federation.json")


@enrol_app.command("sign")
def enrol_sign(
    request: Path = typer.Argument(..., help="A request written by `securefl enrol request`.", **INPUT_FILE),
    directory: Path = typer.Option(Path("enrolment"), "--dir", help="The operator's directory (ca.key, ca.crt, federation.json).", **INPUT_DIR),
    replace: bool = typer.Option(False, help="Replace the key of a party already enrolled (a lost key); its old certificate is revoked."),
) -> None:
    """At the operator: check a request, issue its certificate, enrol its key in federation.json."""
    from .enrolment import sign_request
    from .keyfiles import passphrase

    try:
        certificate = sign_request(request, directory, passphrase("the CA key"), replace=replace)
    except SecureFLError as exc:
        fail(exc)
    console.print(f"wrote {certificate} and updated {directory / 'federation.json'}: send both to the party, and "
                  "the new federation.json to every party (services reload it at restart)")


@enrol_app.command("revoke")
def enrol_revoke(
    party_id: str = typer.Argument(..., help="Id of the party to remove."),
    role: Role = typer.Option("site", help="site or operator (the aggregator and key-holder are replaced, not removed)."),
    directory: Path = typer.Option(Path("enrolment"), "--dir", help="The operator's directory.", **INPUT_DIR),
) -> None:
    """Remove a party from federation.json and revoke its certificate."""
    from .enrolment import revoke
    from .pki import PartyName

    try:
        revoke(directory, PartyName(role.value, party_id))
    except SecureFLError as exc:
        fail(exc)
    console.print(f"removed {role.value} {party_id}; send the new federation.json to every party and restart the services")


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
        unknown = [s for s in chosen if s not in SCHEMES] + [
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
    scheme: SchemeName = typer.Option(DEFAULT_SCHEME, help="Protection scheme of the secure run."),
    clients: int = typer.Option(5, min=2, max=20, help="Number of hospitals."),
    rounds: int = typer.Option(10, min=1, max=100, help="Federated rounds."),
    seed: int = typer.Option(0, help="Seed of the data split and model initialisation."),
) -> None:
    """Train a small model on breast-cancer data split across hospitals, securely and in
    plaintext FedAvg, and compare accuracy, time and bytes."""
    from .demo import run_demo

    try:
        run_demo(scheme=scheme.value, n_clients=clients, rounds=rounds, seed=seed, console=Console())
    except SecureFLError as exc:
        fail(exc)
