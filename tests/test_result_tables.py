"""The result tables of README.md and bench/README.md are generated from the committed JSON, and
the check that keeps them so fails on a hand edit, on a stale table and on a broken marker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from securefl.benchmark import numbers
from securefl.benchmark.tables import BLOCK, TableError, main, regenerate, render_file, stale_blocks

ROOT = Path(__file__).resolve().parent.parent
READMES = (ROOT / "README.md", ROOT / "bench" / "README.md")


@pytest.fixture
def bench_copy(tmp_path: Path) -> Path:
    """A copy of bench/ (scripts, results, README) to tamper with."""
    copy = tmp_path / "bench"
    shutil.copytree(ROOT / "bench", copy, ignore=shutil.ignore_patterns("*.png", "__pycache__"))
    return copy


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_tables_are_what_the_committed_json_renders(readme: Path):
    assert BLOCK.search(readme.read_text()), f"{readme} has no generated table"
    diff = stale_blocks(readme)
    assert diff == "", f"tables differ from their JSON; run: python -m securefl.benchmark.tables --update " \
                       f"README.md bench/README.md\n{diff}"


def test_every_committed_result_has_a_table_in_the_bench_readme():
    included = {match["path"] for match in BLOCK.finditer((ROOT / "bench" / "README.md").read_text())}
    results = {f"results/{path.name}" for path in (ROOT / "bench" / "results").glob("*.json")}
    assert results <= included, f"results without a table in bench/README.md: {sorted(results - included)}"


def test_a_hand_edited_number_fails_the_check(bench_copy: Path):
    readme = bench_copy / "README.md"
    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1M × 1M |"))  # a generated PSI row
    edited = row.replace("| 1M × 1M |", "| 1M × 1M (edited) |")
    readme.write_text(text.replace(row, edited))
    diff = stale_blocks(readme)
    assert f"-{edited}" in diff and f"+{row}" in diff
    assert main(["--check", str(readme)]) == 1


def test_a_new_result_makes_its_table_stale_until_updated_and_ratios_follow_the_json(bench_copy: Path):
    readme, result = bench_copy / "README.md", bench_copy / "results" / "ckks_round.json"
    report = json.loads(result.read_text())
    report["end_to_end"]["ckks"]["round_seconds"] = 9.11
    report["end_to_end"]["plain"]["round_seconds"] = 9.11 / 4
    result.write_text(json.dumps(report))
    assert "| 9.11 s | 2.28 s | 4.00× |" in stale_blocks(readme)
    assert main(["--check", str(readme)]) == 1

    prose_before = BLOCK.sub("", readme.read_text())
    assert main(["--update", str(readme)]) == 0
    assert stale_blocks(readme) == "" and main(["--check", str(readme)]) == 0
    assert BLOCK.sub("", readme.read_text()) == prose_before  # the human-written text is untouched


def test_one_table_of_a_result_is_selected_by_name():
    only = render_file(ROOT / "bench" / "results" / "bench.json", "model-size")
    assert "Across model sizes" in only and "Across client counts" not in only
    with pytest.raises(TableError, match="no table named 'latency'"):
        render_file(ROOT / "bench" / "results" / "bench.json", "latency")


@pytest.mark.parametrize("broken", [
    "<!-- table: results/psi.json -->\nno end marker\n",
    "<!-- table: results/psi.json two names -->\n<!-- end table -->\n",
])
def test_a_broken_marker_is_reported_not_skipped(broken: str, bench_copy: Path):
    with pytest.raises(TableError, match="marker"):
        regenerate(broken, bench_copy)
    readme = bench_copy / "README.md"
    readme.write_text(readme.read_text() + broken)
    assert main(["--check", str(readme)]) == 2


def test_a_result_without_a_renderer_or_naming_a_path_is_reported(bench_copy: Path):
    (bench_copy / "results" / "orphan.json").write_text(json.dumps({"benchmark": "orphan", "machine": {}}))
    with pytest.raises(TableError, match=r"no renderer for benchmark 'orphan'.*orphan\.py"):
        render_file(bench_copy / "results" / "orphan.json")
    (bench_copy / "results" / "psi.json").write_text(json.dumps({"benchmark": "psi", "machine": {}}))
    with pytest.raises(TableError, match="the psi table cannot be rendered from it"):
        render_file(bench_copy / "results" / "psi.json")
    (bench_copy / "results" / "escape.json").write_text(json.dumps({"benchmark": "../../elsewhere/x"}))
    with pytest.raises(TableError, match="must name a script"):
        render_file(bench_copy / "results" / "escape.json")


def test_provenance_says_what_an_old_result_did_not_record():
    rendered = render_file(ROOT / "bench" / "results" / "psi.json")
    assert "_Run: command, commit and date not recorded. Machine: 2 CPUs x86_64" in rendered
    assert "TenSEAL 0.3.18" in rendered


@pytest.mark.parametrize("value, expected", [
    (0.595, "0.595"), (9.996, "10.0"), (12042.5, "12,000"), (1879.3, "1,880"), (164.33, "164"), (1.0, "1.00"),
])
def test_numbers_keep_three_significant_digits(value: float, expected: str):
    assert numbers.significant(value) == expected


def test_numbers_pick_a_readable_unit():
    assert [numbers.duration(s) for s in (9.1128, 0.0284, 0.000785)] == ["9.11 s", "28.4 ms", "785 µs"]
    assert [numbers.byte_size(b) for b in (32_148_165, 248_028, 999)] == ["32.1 MB", "248 kB", "999 B"]
    assert numbers.times(32_148_165, 4_000_004) == "8.04×"
    assert numbers.times(1.0, None) == numbers.times(1.0, 0.0) == numbers.ratio(float("nan")) == numbers.MISSING
    assert numbers.scientific(1.0585e-7) == "1.1e-7"
    assert [numbers.compact_count(n) for n in (10_000, 62_006, 1_000_000, 11_689_512)] == ["10k", "62k", "1M", "11.7M"]
