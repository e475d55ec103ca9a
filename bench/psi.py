"""PSI alignment: 100k x 100k and 1M x 1M IDs with 50% overlap, both parties on this machine.

Both parties run in one process (`securefl.simulation.local_psi_outcomes`: real gRPC with
mutual TLS on localhost, group operations on one thread per core). Reports wall time, bytes
exchanged, elements per second, the load average while it ran, and, measured in the same run,
the cost of one ristretto255 scalar multiplication and of one hash-to-group. The protocol's floor
is 4 scalar multiplications per element pair (each party blinds its own set and the other's);
`floor_seconds` spreads that over this machine's cores.

Run: python bench/psi.py [--sizes 100000 1000000] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import os
import time
from pathlib import Path

import rbcl

from securefl.benchmark.harness import benchmark_parser, envelope, median_seconds, publish
from securefl.benchmark.numbers import byte_size, compact_count, count, duration, ratio, significant
from securefl.benchmark.tables import Table
from securefl.psi.hashing import HASH_TO_GROUP_BYTES, XmdExpander, hash_to_group, session_dst
from securefl.simulation import local_psi_outcomes

HERE = Path(__file__).resolve().parent


def operation_costs(samples: int = 4000) -> dict:
    point = rbcl.crypto_core_ristretto255_random()
    scalar = rbcl.crypto_core_ristretto255_scalar_random()
    expander = XmdExpander(session_dst(b"0" * 16), HASH_TO_GROUP_BYTES)
    mult, _ = median_seconds(lambda: [rbcl.crypto_scalarmult_ristretto255(scalar, point) for _ in range(samples)], 3)
    hashing, _ = median_seconds(lambda: [hash_to_group(b"%d" % i, expander) for i in range(samples)], 3)
    return {"scalar_mult_seconds": mult / samples, "hash_to_group_seconds": hashing / samples}


def rescore(result: dict, costs: dict) -> dict:
    """Recompute the floors of a run with the final operation costs."""
    cores = os.cpu_count() or 1
    size, wall = result["size_a"], result["wall_seconds"]
    floor = 4 * size * costs["scalar_mult_seconds"] / cores
    with_hashing = (4 * costs["scalar_mult_seconds"] + 2 * costs["hash_to_group_seconds"]) * size / cores
    return {**result, "floor_seconds": floor, "ratio_to_floor": wall / floor,
            "floor_with_hashing_seconds": with_hashing, "ratio_to_floor_with_hashing": wall / with_hashing}


def run(size: int) -> dict:
    shared = size // 2
    ids_a = [f"patient-{i}" for i in range(size)]
    ids_b = [f"patient-{i}" for i in range(size - shared, 2 * size - shared)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    outcome_a, outcome_b = local_psi_outcomes(ids_a, ids_b)
    wall = time.perf_counter() - started
    assert outcome_a.cardinality == outcome_b.cardinality == shared
    return {
        "size_a": size, "size_b": size, "intersection": shared, "wall_seconds": wall,
        "bytes_exchanged": outcome_b.bytes_sent + outcome_b.bytes_received,
        "elements_per_second": 2 * size / wall,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
    }


def tables(report: dict) -> list[Table]:
    """One row per set size: time, bytes and speed, against the floors of the same run."""
    costs, cpus = report["operation_costs"], report["machine"]["cpus"]
    rows = [[f"{compact_count(r['size_a'])} × {compact_count(r['size_b'])}", count(r["intersection"]),
             duration(r["wall_seconds"]), byte_size(r["bytes_exchanged"]), significant(r["elements_per_second"]),
             duration(r["floor_seconds"]), ratio(r["ratio_to_floor"]), ratio(r["ratio_to_floor_with_hashing"])]
            for r in report["runs"]]
    caption = (f"Measured in the same run: one ristretto255 scalar multiplication {duration(costs['scalar_mult_seconds'])}, "
               f"one hash-to-group {duration(costs['hash_to_group_seconds'])}; floors spread over {cpus} CPUs.")
    columns = ("sets", "intersection", "wall time", "bytes exchanged", "elements/s", "floor (4 mults/pair)",
               "× floor", "× floor incl. 2 hashes/pair")
    return [Table("psi", columns, rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "psi.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    report = envelope("psi")
    # Measured before and after the runs; the cheaper reading is the one least disturbed.
    before = operation_costs()
    raw_runs = []
    for size in args.sizes:
        raw_runs.append((size, run(size)))
    after = operation_costs()
    costs = {key: min(before[key], after[key]) for key in before}
    runs = []
    for size, raw in raw_runs:
        result = rescore(raw, costs)
        runs.append(result)
        print(f"{size:,} x {size:,}: {result['wall_seconds']:.1f} s, {result['bytes_exchanged'] / 1e6:.1f} MB, "
              f"{result['elements_per_second']:,.0f} elements/s, {result['ratio_to_floor']:.2f}x the 4-multiplication floor")
    publish({**report, "operation_costs": costs, "runs": runs}, tables, args)


if __name__ == "__main__":
    main()
