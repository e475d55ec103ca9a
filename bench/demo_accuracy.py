"""Does secure aggregation change what the demo learns? `securefl demo`'s final test accuracy
with each scheme beside plaintext FedAvg on the same split and seeds, over several seeds.

Each run is the demo itself (`securefl.demo.run_demo`: five hospitals, ten rounds, real
key-holder and aggregator processes over mutual TLS). The federation's parameters are the
demo's (value_bound 10, max_weight the largest hospital's rows, bfv precision_bits 20: k = 1,
the model fits one ciphertext anyway) unless a configuration names others: `bfv, 12 bits` takes
the default precision floor (k = 2, 16 bits at five hospitals), and `loose bounds` adds
value_bound 100 and max_weight 500, to show what they cost a fixed-point scheme. secagg runs
with the demo's dropouts (plain FedAvg loses the same hospitals).

Run: python bench/demo_accuracy.py [--seeds 0 1 2 3 4] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.console import Console

from securefl.benchmark.harness import benchmark_parser, envelope, publish
from securefl.benchmark.tables import Table
from securefl.demo import run_demo

HERE = Path(__file__).resolve().parent
CLIENTS, ROUNDS = 5, 10
CONFIGURATIONS = {  # name: (scheme, (value_bound, max_weight) and precision_bits, None for the demo's)
    "bfv": ("bfv", None, None),
    "bfv, 12 bits (k = 2)": ("bfv", None, 12),
    "bfv, 12 bits, loose bounds": ("bfv", (100.0, 500.0), 12),
    "ckks": ("ckks", None, None),
    "secagg": ("secagg", None, None),
}


def measure(name: str, seeds: list[int]) -> dict:
    scheme, bounds, precision_bits = CONFIGURATIONS[name]
    runs = []
    for seed in seeds:
        secure, plain = run_demo(scheme=scheme, n_clients=CLIENTS, rounds=ROUNDS, seed=seed,
                                 console=Console(quiet=True), bounds=bounds, precision_bits=precision_bits)
        runs.append({"seed": seed, "secure": secure.accuracy[-1], "plain": plain.accuracy[-1],
                     "bytes_ratio": statistics.mean(secure.bytes_per_client) / statistics.mean(plain.bytes_per_client)})
    return {"scheme": scheme, "bounds": bounds, "precision_bits": precision_bits, "runs": runs}


def tables(report: dict) -> list[Table]:
    """Per configuration: the final accuracy difference to plaintext FedAvg, seed by seed."""
    seeds = [run["seed"] for run in next(iter(report["configurations"].values()))["runs"]]
    rows = []
    for name, result in report["configurations"].items():
        differences = [100 * (run["secure"] - run["plain"]) for run in result["runs"]]
        rows.append([name, *(f"{d:+.2f}" for d in differences), f"{max(map(abs, differences)):.2f}",
                     f"{statistics.mean(run['bytes_ratio'] for run in result['runs']):.2f}×"])
    caption = (f"Final test accuracy of `securefl demo` ({report['clients']} hospitals, {report['rounds']} rounds) "
               "minus plaintext FedAvg's on the same split and seed, in percentage points (143 test rows: one row is "
               "0.70 pp).")
    return [Table("demo_accuracy", ("scheme", *(f"seed {s}" for s in seeds), "largest |difference|", "bytes ×"),
                  rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "demo_accuracy.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    args = parser.parse_args()
    report = envelope("demo_accuracy")
    report.update(clients=CLIENTS, rounds=ROUNDS,
                  configurations={name: measure(name, args.seeds) for name in args.configurations})
    publish(report, tables, args)


if __name__ == "__main__":
    main()
