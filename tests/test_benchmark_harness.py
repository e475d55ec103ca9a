"""What every benchmark records about its run, and the bench/ scripts on the shared harness:
each runs on tiny inputs and writes JSON and the Markdown rendered from that JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from securefl.benchmark.harness import command_line, envelope, machine_description, write_results
from securefl.benchmark.sites import SiteProcesses
from securefl.benchmark.tables import Table, render_file, render_markdown
from securefl.simulation import LocalFederation

ROOT = Path(__file__).resolve().parent.parent
MACHINE_KEYS = {"python", "platform", "processor", "cpus", "numpy", "tenseal", "load_average_1min"}


def test_machine_description_names_versions_load_and_the_commit_of_this_checkout():
    machine = machine_description()
    assert MACHINE_KEYS <= set(machine)
    assert re.fullmatch(r"[0-9a-f]{40}", machine["git_commit"]) and isinstance(machine["git_dirty"], bool)


def test_command_line_is_written_as_a_user_would_retype_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert command_line(["/venv/bin/securefl", "bench", "--quick"]) == "securefl bench --quick"
    assert command_line(["/src/securefl/__main__.py", "bench"]) == "python -m securefl bench"
    monkeypatch.chdir(ROOT)
    assert command_line([str(ROOT / "bench" / "psi.py"), "--sizes", "10"]) == "python bench/psi.py --sizes 10"
    assert command_line(["/elsewhere/x.py", "--out", "a b.json"]) == "python /elsewhere/x.py --out 'a b.json'"


def test_markdown_is_rendered_from_the_json_as_written(tmp_path: Path):
    report = {**envelope("toy"), "values": (1.5, 2.0)}  # a tuple comes back from JSON as a list
    seen = []

    def tables(recorded: dict) -> list[Table]:
        seen.append(recorded)
        return [Table("toy", ("measure", "value"), [["first", str(recorded["values"][0])]])]

    recorded = write_results(report, tables, tmp_path / "toy.json", tmp_path / "toy.md")
    assert recorded == json.loads((tmp_path / "toy.json").read_text()) == seen[0]
    assert recorded["values"] == [1.5, 2.0]
    assert (tmp_path / "toy.md").read_text() == render_markdown(recorded, tables(recorded))
    assert "| first | 1.5 |" in (tmp_path / "toy.md").read_text()


@pytest.mark.parametrize("script, arguments, expected_row", [
    ("psi.py", ["--sizes", "200"], "| 200 × 200 | 100 |"),
    ("ckks_round.py", ["--params", "10000", "--clients", "2", "--repeat", "1"], "| bytes sent per client |"),
    ("secagg_round.py", ["--params", "1000", "--clients", "4", "--dropout-timeout", "1"],
     "| whole round, 1 dropout noticed at a 1 s deadline |"),
    ("aggregator.py", ["--quick"], "| disk written per CKKS round / one submission |"),
])
def test_bench_script_writes_json_with_the_run_description_and_its_tables(script, arguments, expected_row, tmp_path):
    name = Path(script).stem
    bench = tmp_path / "bench"
    command = [sys.executable, str(ROOT / "bench" / script), *arguments,
               "--out", str(bench / "results" / f"{name}.json"), "--markdown", str(tmp_path / "tables.md")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr

    report = json.loads((bench / "results" / f"{name}.json").read_text())
    assert report["benchmark"] == name
    assert report["command"].startswith(f"python bench/{script} {' '.join(arguments)}")
    assert MACHINE_KEYS | {"git_commit"} <= set(report["machine"])
    markdown = (tmp_path / "tables.md").read_text()
    assert expected_row in markdown and report["command"] in markdown
    assert markdown in completed.stdout  # the script prints the tables it wrote
    # The README tool finds the script beside its results and renders the JSON to the same tables.
    (bench / script).write_text((ROOT / "bench" / script).read_text())
    assert render_file(bench / "results" / f"{name}.json") == markdown


def test_benchmark_sites_run_a_round_only_with_the_updates_prepared_for_it():
    """The sites make their updates before a round is timed; a round asked for without them is
    refused by every worker, and the workers stay in step for the next request."""
    with LocalFederation(4, scheme="plain") as fed, SiteProcesses(fed, 2) as sites:
        sites.prepare("round-a", 100)
        with pytest.raises(RuntimeError, match="round 'round-b' has no updates"):
            sites.aggregate("round-b")
        stats = sites.aggregate("round-a")
        assert len(stats) == 4 and all(s.bytes_sent > 0 for s in stats)
