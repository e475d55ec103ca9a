"""What mutual TLS costs: a round of 1,000,000 parameters, plain and ckks, over mutual TLS and
over plaintext gRPC (--insecure), in the same run.

Both federations (LocalFederation: real key-holder and aggregator processes, all clients
submitting concurrently from threads) run side by side, and their rounds alternate, so drift in
the machine's load hits both alike; each is warmed up with one round first. Reported: the median
round time of each, and the overhead of TLS as the median of the paired ratios (each TLS round
against the plaintext round next to it), which cancels slow drift in a shared machine's load.
Target: at most 5 %.

Run: python bench/tls_cost.py [--params N] [--clients N] [--rounds N] [--schemes plain,ckks] [--out PATH]
     [--markdown PATH]"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from securefl.benchmark.harness import benchmark_parser, envelope, publish
from securefl.benchmark.numbers import count, duration
from securefl.benchmark.tables import Table
from securefl.simulation import LocalFederation

HERE = Path(__file__).resolve().parent


def timed_round(federation: LocalFederation, pool: ThreadPoolExecutor, updates: list[np.ndarray]) -> float:
    started = time.perf_counter()
    list(pool.map(lambda i: federation.clients[i].aggregate(updates[i], weight=1.0 + i, timeout=300), range(len(updates))))
    return time.perf_counter() - started


def measure(scheme: str, params: int, clients: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-1, 1, size=params).astype(np.float32) for _ in range(clients)]
    times: dict[str, list[float]] = {"tls": [], "insecure": []}
    with LocalFederation(clients, scheme=scheme) as tls, LocalFederation(clients, scheme=scheme, insecure=True) as plain:
        federations = {"tls": tls, "insecure": plain}
        with ThreadPoolExecutor(clients) as pool:
            for federation in federations.values():
                timed_round(federation, pool, updates)  # warm-up: encryption pool, channels, handshakes
            for index in range(rounds):
                order = ("tls", "insecure") if index % 2 == 0 else ("insecure", "tls")
                for transport in order:
                    times[transport].append(timed_round(federations[transport], pool, updates))
    tls_s, insecure_s = statistics.median(times["tls"]), statistics.median(times["insecure"])
    paired = [t / i for t, i in zip(times["tls"], times["insecure"])]
    return {
        "round_seconds": times, "median_tls_seconds": tls_s, "median_insecure_seconds": insecure_s,
        "tls_overhead": statistics.median(paired) - 1.0, "overhead_of_medians": tls_s / insecure_s - 1.0,
    }


def tables(report: dict) -> list[Table]:
    """One row per scheme: median round over mutual TLS and over plaintext, and TLS's overhead."""
    rows = [
        [scheme, duration(r["median_tls_seconds"]), duration(r["median_insecure_seconds"]), f"{r['tls_overhead']:+.1%}"]
        for scheme, r in report["results"].items()
    ]
    caption = (f"{report['clients']} clients × {count(report['params'])} parameters, {report['rounds']} rounds per "
               "transport, alternating; overhead is the median of paired round ratios.")
    if report.get("note"):
        caption += f" {report['note'][:1].upper()}{report['note'][1:]}."
    return [Table("tls_cost", ("scheme", "round, mutual TLS", "round, plaintext", "TLS overhead"), rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "tls_cost.json")
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15, help="Measured rounds per transport (after a warm-up).")
    parser.add_argument("--schemes", default="plain,bfv,ckks")
    parser.add_argument("--note", default="", help="Conditions of the run (e.g. other load on the machine).")
    args = parser.parse_args()

    result = envelope("tls_cost")
    result.update(params=args.params, clients=args.clients, rounds=args.rounds, note=args.note,
                  results={scheme: measure(scheme, args.params, args.clients, args.rounds)
                           for scheme in args.schemes.split(",")})
    publish(result, tables, args)


if __name__ == "__main__":
    main()
