"""`securefl bench --quick` end to end on the smallest grid."""

import json
import subprocess
import sys

from securefl.benchmark.grid import QUICK, tables
from securefl.benchmark.tables import render_markdown


def test_quick_bench_measures_every_scheme_against_plain_and_writes_json_tables_and_charts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "securefl", "bench", "--quick", "--json", str(tmp_path / "bench.json"),
         "--markdown", str(tmp_path / "tables.md"), "--plot", str(tmp_path / "charts")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "round ×" in result.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {"python", "cpus", "tenseal", "git_commit"} <= set(report["machine"])
    assert report["command"].startswith("python -m securefl bench --quick --json ")
    measured = {(r["scheme"], r["size"], r["clients"]) for r in report["results"]}
    assert measured == {(scheme, size, n) for scheme, n, size in QUICK.configurations()}
    for row in report["results"]:
        assert row["round_seconds"] > 0 and row["bytes_per_client"] > 0 and row["aggregator_peak_mb"] > 0
        assert row["ratios"]["round"] > 0
        if row["scheme"] == "plain":
            assert row["ratios"]["bytes"] == 1.0
        if row["scheme"] == "secagg":
            assert row["ratios"]["bytes"] == 1.0  # masked uint32 is the size of float32
        if row["scheme"] == "ckks":
            assert 7.5 < row["ratios"]["bytes"] < 10.5  # whole ciphertexts: 8x plus padding of the last one
    by_configuration = {(r["scheme"], r["size"], r["clients"]): r for r in report["results"]}
    for (scheme, size, n), row in by_configuration.items():
        if scheme == "bfv":  # packed: 2 or 3 values per slot, whole ciphertexts (padding dominates at 10k)
            assert row["ratios"]["bytes"] < by_configuration["ckks", size, n]["ratios"]["bytes"] / 2
    markdown = (tmp_path / "tables.md").read_text()
    assert markdown == render_markdown(report, tables(report))  # rendered from the JSON of the same run
    assert "Across model sizes, 3 clients:" in markdown and "Across client counts, model 10k:" in markdown
    assert "| ckks | small-cnn (62k) | 3 |" in markdown and "| secagg | 10k | 2 |" in markdown
    assert "| bfv | small-cnn (62k) | 3 |" in markdown
    assert report["command"] in markdown
    for chart in ("overhead_vs_model_size.png", "overhead_vs_clients.png"):
        assert (tmp_path / "charts" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_schemes_or_sizes_are_refused_with_a_clear_message():
    result = subprocess.run([sys.executable, "-m", "securefl", "bench", "--quick", "--sizes", "gpt5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "gpt5" in result.stderr
