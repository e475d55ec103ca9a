"""What the `securefl` commands share: flags made from settings fields, loading the effective
settings, failing with one line and the documented exit code, and running a service until a
signal drains it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar

import typer

from .errors import SecureFLError
from .exitcodes import OK, exit_code

log = logging.getLogger("securefl.cli")

# Input files: typer checks they exist, are files and are readable before the command runs.
INPUT_FILE: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}
INPUT_DIR: dict[str, Any] = {"exists": True, "file_okay": False, "readable": True}
PORT: dict[str, Any] = {"min": 0, "max": 65535}

CONFIG_OPTION = typer.Option(None, "--config", help="TOML file of settings (flags and SECUREFL_* variables override "
                             "it).", **INPUT_FILE)
PRINT_CONFIG_OPTION = typer.Option(False, "--print-config", help="Print the effective settings as TOML (secrets "
                                   "redacted) and exit.")
READY_FILE_OPTION = typer.Option(None, help="Once serving, write the bound port here (first line), then "
                                 "`metrics_port=N` when metrics are served.")
VERBOSE_OPTION = typer.Option(None, "--verbose/--no-verbose", hidden=True,
                              help="Deprecated: --log-level info (or warning).")

S = TypeVar("S")


def _shown(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def setting(model: type, name: str, *declarations: str, **checks: Any) -> Any:
    """A flag for the settings field `name`: unset unless given on the command line, so that
    the environment and the config file apply; its help is the field's description."""
    field = model.model_fields[name]
    shown = "" if field.is_required() or field.default is None else f" (default: {_shown(field.default)})"
    return typer.Option(None, *declarations, help=f"{field.description}{shown}", show_default=False, **checks)


def fail(error: SecureFLError) -> NoReturn:
    """One line on stderr and the exit code of the error's kind (securefl.exitcodes)."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(exit_code(error))


def settings_from(ctx: typer.Context, model: type[S], config: Optional[Path], print_config: bool,
                  verbose: Optional[bool] = None) -> S:
    """The effective settings of a `serve` command: its command-line flags over the
    environment over `config`. With `print_config`, print them and exit."""
    from .services.settings import load_settings, render

    flags = {name: value for name, value in ctx.params.items()
             if name in model.model_fields and ctx.get_parameter_source(name).name == "COMMANDLINE"}
    if verbose is not None and "log_level" not in flags:
        flags["log_level"] = "info" if verbose else "warning"
    try:
        settings = load_settings(model, config, flags)
    except SecureFLError as exc:
        fail(exc)
    if print_config:
        typer.echo(render(settings), nl=False)
        raise typer.Exit(OK)
    return settings


def serve(settings: Any, start: Callable[[Any], Any], ready_file: Optional[Path],
          finished: threading.Event | None = None) -> NoReturn:
    """Configure the logs, start the service, announce it, serve until SIGTERM or SIGINT (or
    `finished`), drain within the settings' grace period, exit 0."""
    from .logs import configure

    configure(settings.log_level.value, settings.log_format.value)
    stop = finished or threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stop.set())
    try:
        running = start(settings)
    except SecureFLError as exc:
        if settings.log_format.value != "json":
            fail(exc)
        log.critical("cannot start: %s", exc)  # a JSON line, like every other line of the log
        raise typer.Exit(exit_code(exc)) from None
    running.ready()
    if ready_file is not None:
        extra = f"metrics_port={running.metrics.port}\n" if running.metrics is not None else ""
        announce(ready_file, f"{running.port}\n{extra}")
    stop.wait()
    log.info("draining (grace period %g s)", settings.shutdown_grace)
    running.shutdown(settings.shutdown_grace)
    raise typer.Exit(OK)


def announce(ready_file: Path, text: str) -> None:
    partial = ready_file.with_suffix(".partial")
    partial.write_text(text)
    partial.rename(ready_file)  # atomic: readers never see a half-written file
