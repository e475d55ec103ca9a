"""Result tables rendered from benchmark JSON, and the generated blocks of the READMEs.

Each benchmark renders its own tables from its report (`securefl bench`: `grid.tables`;
`bench/NAME.py`: its `tables(report)` function), so the JSON layout and its table live side by
side. A Markdown file includes them between markers, with the JSON path relative to the file:

    <!-- table: results/ckks_round.json -->        (every table of that benchmark)
    <!-- table: results/bench.json model-size -->  (one table, by name)
    …generated…
    <!-- end table -->

`python -m securefl.benchmark.tables --update README.md bench/README.md` rewrites the blocks,
`--check` fails on any block that differs from what the JSON renders (a hand edit or a stale
result), and `python -m securefl.benchmark.tables results/x.json` prints the tables."""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .numbers import MISSING, times
from .table import Table

Report = dict[str, Any]

UPDATE_COMMAND = "python -m securefl.benchmark.tables --update README.md bench/README.md"
BLOCK = re.compile(r"^<!-- table: (?P<path>\S+)(?: (?P<name>[\w-]+))? -->\n(?P<body>.*?)^<!-- end table -->$", re.S | re.M)
OPENING = re.compile(r"^<!-- table:.*$", re.M)  # markers stand on their own line; a mention in prose is not one


class TableError(Exception):
    """A marker, a JSON file or a renderer that cannot produce the table asked for."""


Renderer = Callable[[Report], list[Table]]


def compared(measure: str, value: float, base: float | None, shown: Callable[[float], str]) -> list[str]:
    """A row `measure | value | base | value/base` of a "protected beside plaintext" table; a
    value without a plaintext counterpart gets dashes."""
    return [measure, shown(value), MISSING if base is None else shown(base), times(value, base)]


def provenance(report: Report) -> str:
    """Where the numbers come from: command, commit, date, machine and the load it ran under."""
    machine = report.get("machine", {})
    run, missing = [], []
    if "command" in report:
        run.append(f"`{report['command']}`")
    else:
        missing.append("command")
    if machine.get("git_commit"):
        run.append(f"commit `{machine['git_commit'][:10]}`" + (" with local changes" if machine.get("git_dirty") else ""))
    else:
        missing.append("commit")
    if "recorded" in report:
        run.append(report["recorded"])
    else:
        missing.append("date")
    if missing:
        run.append(" and ".join(filter(None, [", ".join(missing[:-1]), missing[-1]])) + " not recorded")
    host = (f"{machine.get('cpus', '?')} CPUs {machine.get('processor', '?')} ({machine.get('platform', '?')}), "
            f"Python {machine.get('python', '?')}, numpy {machine.get('numpy', '?')}, TenSEAL {machine.get('tenseal', '?')}")
    if machine.get("load_average_1min") is not None:
        host += f", load average {machine['load_average_1min']:g} at the start"
    return f"_Run: {', '.join(run)}. Machine: {host}._"


def render_markdown(report: Report, tables: list[Table]) -> str:
    """The tables, then the line saying where their numbers come from."""
    return "\n\n".join([*(t.markdown() for t in tables), provenance(report)]) + "\n"


def renderer_for(report: Report, json_path: Path) -> Renderer:
    """`securefl bench` renders in the package; `bench/NAME.py` beside `bench/results/*.json`
    renders benchmark NAME with its `tables` function."""
    benchmark = report.get("benchmark")
    if benchmark == "securefl bench":
        from .grid import tables

        return tables
    if not isinstance(benchmark, str) or not re.fullmatch(r"\w+", benchmark):  # a name, never a path
        raise TableError(f"{json_path}: 'benchmark' must name a script in bench/, not {benchmark!r}")
    script = json_path.resolve().parent.parent / f"{benchmark}.py"
    if not script.is_file():
        raise TableError(f"{json_path}: no renderer for benchmark {benchmark!r} (expected a tables() function in {script})")
    spec = importlib.util.spec_from_file_location(f"_benchmark_script_{benchmark}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "tables", None)):
        raise TableError(f"{script} has no tables(report) function")
    return module.tables


def render_file(json_path: Path, name: str | None = None) -> str:
    """The Markdown of a result file: all its tables, or only the one called `name`."""
    try:
        report = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise TableError(f"{json_path}: {exc}") from None
    render = renderer_for(report, json_path)
    try:
        tables = render(report)
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"{json_path}: the {report['benchmark']} table cannot be rendered from it "
                         f"({type(exc).__name__}: {exc})") from None
    if name is not None:
        tables = [t for t in tables if t.name == name]
        if not tables:
            raise TableError(f"{json_path}: no table named {name!r}")
    return render_markdown(report, tables)


def regenerate(text: str, base: Path) -> str:
    """`text` with every generated block rendered afresh from its JSON (paths relative to `base`)."""
    if len(BLOCK.findall(text)) != len(OPENING.findall(text)):
        raise TableError("a '<!-- table: PATH [NAME] -->' marker lacks its '<!-- end table -->' or is malformed")

    def block(match: re.Match) -> str:
        body = render_file(base / match["path"], match["name"])
        note = f"<!-- generated from {match['path']} by `{UPDATE_COMMAND}`: do not edit by hand -->"
        return f"{match.group(0).splitlines()[0]}\n{note}\n\n{body}<!-- end table -->"

    return BLOCK.sub(block, text)


def stale_blocks(markdown_path: Path) -> str:
    """A diff of the generated blocks of `markdown_path` that differ from their JSON; empty when current."""
    text = markdown_path.read_text()
    try:
        fresh = regenerate(text, markdown_path.parent)
    except TableError as exc:
        raise TableError(f"{markdown_path}: {exc}") from None
    return "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True),
                                        str(markdown_path), f"{markdown_path} (rendered from the JSON)"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m securefl.benchmark.tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="Result JSON to print, or Markdown files with --update/--check.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="Rewrite the generated blocks of the Markdown files.")
    mode.add_argument("--check", action="store_true", help="Fail if a generated block differs from its JSON.")
    parser.add_argument("--only", metavar="NAME", help="Print only the table called NAME.")
    args = parser.parse_args(argv)
    try:
        if not (args.update or args.check):
            for path in args.paths:
                print(render_file(path, args.only))
            return 0
        stale = False
        for path in args.paths:
            diff = stale_blocks(path)
            if diff and args.update:
                path.write_text(regenerate(path.read_text(), path.parent))
                print(f"updated {path}")
            elif diff:
                stale = True
                print(diff)
        if stale:
            print(f"generated tables are stale; run: {UPDATE_COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    except (OSError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
