"""CKKS (masked, range-checked, flooded) vs plaintext aggregation for one round: 1,000,000
parameters, 10 clients.

Two parts, both in the same run so ratios compare like with like:

* components, each timed alone on this machine (`securefl.benchmark.he_round`: the scheme's own
  halves and the key-holder's release core, no gRPC): client protection (masking and CKKS
  encryption on the worker pool vs float32 serialisation), bytes per client, aggregator work per
  submission (validate + add in place), key-holder decryption + unmasking + checks of the sum;
* the whole round end to end through LocalFederation (real key-holder and aggregator processes,
  real gRPC), all clients submitting concurrently.

Run: python bench/ckks_round.py [--params N] [--clients N] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from securefl.benchmark.harness import benchmark_parser, envelope, median_seconds, publish
from securefl.benchmark.he_round import he_components
from securefl.benchmark.numbers import byte_size, count, duration, scientific
from securefl.benchmark.tables import Table, compared
from securefl.rounds.chunks import chunk_length
from securefl.rounds.plain import PlainServer, plain_chunks
from securefl.simulation import LocalFederation, SecAggSettings

HERE = Path(__file__).resolve().parent
VALUE_BOUND, MAX_WEIGHT = 10.0, 10.0


def plain_components(params: int, clients: int, repeat: int) -> tuple[float, int, float]:
    """float32 serialisation, its bytes, and the plain aggregator's parse + add per submission."""
    rng = np.random.default_rng(0)
    payloads = [np.append(rng.normal(size=params).astype(np.float32), 1.0) for _ in range(clients)]
    protect_s, _ = median_seconds(lambda: plain_chunks(payloads[0]), repeat)
    submissions = [plain_chunks(p) for p in payloads]
    server, length = PlainServer(), payloads[0].size
    accumulator = server.new_accumulator()
    started = time.perf_counter()
    for chunks in submissions:
        accumulator.add([server.parse_chunk(i, c, chunk_length(i, length, server.chunk_values)) for i, c in enumerate(chunks)])
    return protect_s, sum(map(len, submissions[0])), (time.perf_counter() - started) / clients


def components(params: int, clients: int, repeat: int) -> dict:
    """The hardened CKKS round's components (`securefl.benchmark.he_round`) beside plaintext's."""
    with tempfile.TemporaryDirectory() as workdir:
        ckks = he_components(Path(workdir), "ckks", params, clients, VALUE_BOUND, MAX_WEIGHT, repeat)
    plain_protect_s, plain_bytes, plain_aggregate_s = plain_components(params, clients, repeat)
    return {
        "preset": ckks["preset"],
        "ciphertexts_per_client": ckks["ciphertexts_per_client"],
        "client_protect_seconds": {"ckks": ckks["client_protect_seconds"], "plain": plain_protect_s},
        "client_encrypt_seconds_per_million_params": ckks["client_protect_seconds"] * 1e6 / params,
        "bytes_per_client": {"ckks": ckks["bytes_per_client"], "plain": plain_bytes,
                             "ratio": ckks["bytes_per_client"] / plain_bytes},
        "aggregator_seconds_per_submission": {
            "ckks": ckks["aggregator_seconds_per_submission"], "plain": plain_aggregate_s,
            "ratio": ckks["aggregator_seconds_per_submission"] / plain_aggregate_s,
        },
        "keyholder_decrypt_seconds": ckks["keyholder_decrypt_unmask_seconds"],
        "max_average_error": ckks["max_average_error"],
        "average_error_bound": ckks["average_error_bound"],
    }


def end_to_end(scheme: str, params: int, clients: int) -> dict:
    rng = np.random.default_rng(1)
    updates = [{"w": rng.normal(size=params).astype(np.float32)} for _ in range(clients)]
    settings = SecAggSettings(value_bound=VALUE_BOUND, max_weight=MAX_WEIGHT)
    with LocalFederation(clients, scheme=scheme, secagg=settings) as federation:
        with ThreadPoolExecutor(clients) as pool:
            # A full dry round first: starts the encryption pool and channels outside the timing.
            list(pool.map(lambda i: federation.clients[i].aggregate(updates[i]), range(clients)))
            started = time.perf_counter()
            list(pool.map(lambda i: federation.clients[i].aggregate(updates[i], weight=1.0 + i), range(clients)))
            round_s = time.perf_counter() - started
        stats = [c.last_stats for c in federation.clients]
    return {
        "round_seconds": round_s,
        "mean_client_protect_seconds_under_contention": float(np.mean([s.protect_seconds for s in stats])),
        "bytes_per_client": stats[0].bytes_sent,
    }


def tables(report: dict) -> list[Table]:
    """One table: each cost of CKKS beside plaintext, and their ratio, from the same run."""
    c, rounds = report["components"], report["end_to_end"]
    protect, sent, added = c["client_protect_seconds"], c["bytes_per_client"], c["aggregator_seconds_per_submission"]
    cpus = report["machine"]["cpus"]

    rows = [
        compared(f"client protection of {count(report['params'])} parameters (encryption pool, {cpus} CPUs)",
            protect["ckks"], protect["plain"], duration),
        compared("bytes sent per client", sent["ckks"], sent["plain"], byte_size),
        compared("aggregator work per submission (validate + add in place)", added["ckks"], added["plain"], duration),
        compared("key-holder decryption + unmasking + checks of the sum", c["keyholder_decrypt_seconds"], None, duration),
        compared(f"whole round, {report['clients']} clients on this one machine (LocalFederation)",
            rounds["ckks"]["round_seconds"], rounds["plain"]["round_seconds"], duration),
        compared("mean client protection within that round (all clients share the CPUs)",
            rounds["ckks"]["mean_client_protect_seconds_under_contention"],
            rounds["plain"]["mean_client_protect_seconds_under_contention"], duration),
        compared(f"max error of the released average (bound {scientific(c['average_error_bound'])})",
                 c["max_average_error"], None, scientific),
    ]
    caption = (f"Preset `{c['preset']}`, {c['ciphertexts_per_client']} ciphertexts per client, masked, range-checked "
               f"and flooded; values clipped to ±{VALUE_BOUND:g}, weights up to {MAX_WEIGHT:g}; plaintext is the float32 "
               "update.")
    return [Table("ckks_round", ("measure", "CKKS", "plaintext", "ratio"), rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "ckks_round.json")
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    result = envelope("ckks_round")
    result.update(params=args.params, clients=args.clients, components=components(args.params, args.clients, args.repeat))
    ckks, plain = end_to_end("ckks", args.params, args.clients), end_to_end("plain", args.params, args.clients)
    result["end_to_end"] = {"ckks": ckks, "plain": plain, "round_ratio": ckks["round_seconds"] / plain["round_seconds"]}
    publish(result, tables, args)


if __name__ == "__main__":
    main()
