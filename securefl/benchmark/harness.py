"""What every benchmark shares: the description of the run, timing, and writing its results.

A benchmark builds its report on `envelope(name)` before it measures anything (so the machine
description records the load it started under), adds its own numbers, and hands it to
`write_results`, which writes the JSON and, if asked, the Markdown tables rendered from that
JSON. A script in `bench/` gets its `--out` and `--markdown` options from `benchmark_parser`
and ends with `publish`, which also prints its tables."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .tables import Renderer, render_markdown

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def git_state(directory: Path = PACKAGE_DIR) -> dict[str, Any]:
    """Commit of the checkout `directory` is in and whether tracked files differ from it; empty
    outside a git checkout (an installed wheel) or without git."""
    try:
        commit = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(changes.strip())}


def machine_description() -> dict[str, Any]:
    """The machine, the versions that matter for the numbers, the load at the start, the commit."""
    import numpy
    import tenseal

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": numpy.__version__,
        "tenseal": tenseal.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
        **git_state(),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as a user would retype it: `securefl …`, `python -m securefl …` or
    `python bench/x.py …` (script paths relative to the working directory when inside it)."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0])
    if program.name == "securefl":
        head = ["securefl"]
    elif program.name == "__main__.py" and program.parent.name == "securefl":
        head = ["python", "-m", "securefl"]
    else:
        try:
            shown = program.resolve().relative_to(Path.cwd())
        except ValueError:
            shown = program
        head = ["python", str(shown)]
    return shlex.join(head + argv[1:])


def envelope(benchmark: str) -> dict[str, Any]:
    """The start of a report: which benchmark, when, the command line and the machine."""
    return {
        "benchmark": benchmark,
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine_description(),
    }


def median_seconds(function: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of `repeat` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def write_results(report: dict[str, Any], tables: Renderer,
                  out: Path | None, markdown: Path | None = None) -> dict[str, Any]:
    """Write the report as JSON to `out`, and to `markdown` the tables `tables` renders from that
    same JSON (read back, so the file and the tables can never disagree). Returns the report as
    read back."""
    text = json.dumps(report, indent=2) + "\n"
    recorded = json.loads(text)
    if out is not None:
        _write(out, text)
    if markdown is not None:
        _write(markdown, render_markdown(recorded, tables(recorded)))
    return recorded


def publish(report: dict[str, Any], tables: Renderer, args: argparse.Namespace) -> None:
    """The end of a benchmark script: write the files its `benchmark_parser` options ask for and
    print the tables."""
    recorded = write_results(report, tables, args.out, args.markdown)
    print(render_markdown(recorded, tables(recorded)))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


def benchmark_parser(description: str, default_out: Path) -> argparse.ArgumentParser:
    """A script's argument parser with the options every benchmark has."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=default_out, help="Write the results as JSON here (default: %(default)s).")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="Also write the result tables rendered from the JSON here (Markdown).")
    return parser
